// Command bench compares redlock with its peers on the same local Redis
// nodes in the same run.
//
//	go run ./bench distinct   # TryLock+Unlock cycles on distinct keys: redlock, redsync, hand-written floor
//	go run ./bench handoff    # one hot key, blocking Lock: redlock vs redsync, one process and several
//
// It starts its own redis-server processes (or uses -addrs), prints a table
// with cycles/s and p50/p99 latencies and the ratios, and can write an SVG
// chart (-svg). See docs/benchmarks.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/redlockgo/redlock/internal/redistest"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	nodes    int
	addrs    []string
	workers  []int
	holds    []time.Duration
	procs    []int
	libs     []string
	duration time.Duration
	slices   int
	svg      string
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: bench distinct|handoff [flags]   (bench child is internal)")
		return 2
	}
	mode := args[0]
	if mode == "child" {
		return child(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet(mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var addrs, workers, holds, procs, libs string
	fs.IntVar(&o.nodes, "nodes", 5, "number of local redis-server nodes to start (ignored with -addrs)")
	fs.StringVar(&addrs, "addrs", "", "comma-separated host:port of existing nodes to use instead")
	// A handoff run lasts several times the longest waits the peer shows
	// (2-3 s at 64 workers): no wait can be longer than the run, and waits
	// near its length are seen only if they began near its start.
	duration := 3 * time.Second
	if mode == "handoff" {
		duration = 10 * time.Second
	}
	fs.DurationVar(&o.duration, "duration", duration, "measuring time per configuration")
	fs.StringVar(&o.svg, "svg", "", "write a chart of cycles/s against workers to this file (distinct mode)")
	switch mode {
	case "distinct":
		fs.IntVar(&o.slices, "slices", 6, "slices each configuration's time is cut into, the implementations taking turns")
		fs.StringVar(&workers, "workers", "1,16,64,256", "worker counts")
		fs.StringVar(&libs, "libs", "redlock,redsync,floor", "implementations to compare")
	case "handoff":
		fs.StringVar(&workers, "workers", "16,64", "worker counts")
		fs.StringVar(&holds, "hold", "0,1ms", "time each holder keeps the lock")
		fs.StringVar(&procs, "procs", "1,4", "processes the workers are spread over (1: one shared Client)")
		fs.StringVar(&libs, "libs", "redlock,redsync", "implementations to compare")
	default:
		fmt.Fprintf(stderr, "bench: unknown mode %q (want distinct or handoff)\n", mode)
		return 2
	}
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if mode == "distinct" && o.slices < 1 {
		fmt.Fprintln(stderr, "bench: -slices must be at least 1")
		return 2
	}
	var err error
	if o.workers, err = ints(workers); err != nil {
		fmt.Fprintln(stderr, "bench: -workers:", err)
		return 2
	}
	if o.procs, err = ints(orDefault(procs, "1")); err != nil {
		fmt.Fprintln(stderr, "bench: -procs:", err)
		return 2
	}
	for _, h := range strings.Split(orDefault(holds, "0"), ",") {
		d, err := time.ParseDuration(strings.TrimSpace(h))
		if h == "0" {
			d, err = 0, nil
		}
		if err != nil {
			fmt.Fprintln(stderr, "bench: -hold:", err)
			return 2
		}
		o.holds = append(o.holds, d)
	}
	o.libs = strings.Split(libs, ",")
	if addrs != "" {
		o.addrs = strings.Split(addrs, ",")
	} else {
		for i := 0; i < o.nodes; i++ {
			s, err := redistest.NewServer()
			if err != nil {
				fmt.Fprintln(stderr, "bench:", err)
				return 1
			}
			defer s.Close()
			o.addrs = append(o.addrs, s.Addr)
		}
	}
	fmt.Fprintf(stdout, "%d nodes: %s\n", len(o.addrs), strings.Join(o.addrs, " "))
	if mode == "distinct" {
		return distinct(o, stdout, stderr)
	}
	return handoff(o, stdout, stderr)
}

// stats is what one configuration measured.
type stats struct {
	Ops      int64           `json:"ops"`
	Failures int64           `json:"failures"`
	Lat      []time.Duration `json:"lat"` // per op: cycle latency, or wait for the lock
	// Unfinished counts the waits still running when the run ended (handoff
	// mode); Lat holds each at its length so far, a lower bound.
	Unfinished int64         `json:"unfinished"`
	Elapsed    time.Duration `json:"elapsed"`
	Key        string        `json:"-"`
}

func (s *stats) merge(o stats) {
	s.Ops += o.Ops
	s.Failures += o.Failures
	s.Unfinished += o.Unfinished
	s.Lat = append(s.Lat, o.Lat...)
	s.Elapsed = max(s.Elapsed, o.Elapsed)
}

func (s *stats) rate() float64 { return float64(s.Ops) / s.Elapsed.Seconds() }

func (s *stats) pct(p float64) time.Duration {
	if len(s.Lat) == 0 {
		return 0
	}
	sort.Slice(s.Lat, func(i, j int) bool { return s.Lat[i] < s.Lat[j] })
	return s.Lat[int(p*float64(len(s.Lat)-1))]
}

// distinct runs TryLock+Unlock cycles on distinct keys (one per worker).
func distinct(o options, stdout, stderr io.Writer) int {
	fmt.Fprintf(stdout, "\nTryLock+Unlock cycles, distinct keys, %v per configuration in %d turns\n", o.duration, o.slices)
	fmt.Fprintf(stdout, "%-8s %7s %10s %10s %10s %9s\n", "lib", "workers", "cycles/s", "p50", "p99", "failures")
	results := map[string]map[int]*stats{}
	for _, w := range o.workers {
		lockers := map[string]locker{}
		closeAll := func() {
			for _, l := range lockers {
				l.close()
			}
		}
		for _, lib := range o.libs {
			l, err := newLocker(lib, o.addrs)
			if err != nil {
				closeAll()
				fmt.Fprintln(stderr, "bench:", err)
				return 1
			}
			lockers[lib] = l
			if results[lib] == nil {
				results[lib] = map[int]*stats{}
			}
			results[lib][w] = &stats{}
		}
		// The implementations take turns, slice by slice, so that a change
		// in the machine's load during the run hits them alike.
		for range o.slices {
			for _, lib := range o.libs {
				l := lockers[lib]
				s := measure(w, o.duration/time.Duration(o.slices), false, func(ctx context.Context, worker int) (time.Duration, bool) {
					start := time.Now()
					ok := l.cycle(ctx, fmt.Sprintf("bench/%s/%d", lib, worker))
					return time.Since(start), ok
				})
				total := results[lib][w]
				total.Ops += s.Ops
				total.Failures += s.Failures
				total.Lat = append(total.Lat, s.Lat...)
				total.Elapsed += s.Elapsed
			}
		}
		closeAll()
		for _, lib := range o.libs {
			s := results[lib][w]
			fmt.Fprintf(stdout, "%-8s %7d %10.0f %10v %10v %9d\n", lib, w, s.rate(),
				s.pct(0.5).Round(time.Microsecond), s.pct(0.99).Round(time.Microsecond), s.Failures)
		}
	}
	fmt.Fprintln(stdout, "\nratios (redlock / peer): cycles/s, p99")
	for _, w := range o.workers {
		r := results["redlock"][w]
		for _, peer := range o.libs {
			if p := results[peer][w]; peer != "redlock" && r != nil && p != nil {
				fmt.Fprintf(stdout, "  workers %-4d vs %-8s %6.2fx  p99 %5.2fx\n", w, peer, r.rate()/p.rate(),
					float64(r.pct(0.99))/float64(p.pct(0.99)))
			}
		}
	}
	if o.svg != "" {
		if err := os.WriteFile(o.svg, []byte(chart(o.libs, o.workers, results)), 0o644); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		fmt.Fprintln(stdout, "chart written to", o.svg)
	}
	return 0
}

// measure runs op from w workers for d and collects latencies.
//
// With unfinished (waits for a lock), the ops that the end of the run finds
// in progress are kept: one that got the lock counts as done, one cut short
// is kept in Lat at its length so far (the wait lasted that long at least).
// Dropping them would leave out the longest waits, those still running when
// the run ends, and flatter a locker whose waiters starve.
func measure(w int, d time.Duration, unfinished bool, op func(ctx context.Context, worker int) (time.Duration, bool)) *stats {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var mu sync.Mutex
	total := &stats{}
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < w; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var s stats
			for ctx.Err() == nil {
				lat, ok := op(ctx, i)
				if ctx.Err() != nil {
					if unfinished { // a wait that ended as the run did, or was cut short
						if ok {
							s.Ops++
						} else {
							s.Unfinished++
						}
						s.Lat = append(s.Lat, lat)
					}
					break
				}
				if ok {
					s.Ops++
					s.Lat = append(s.Lat, lat)
				} else {
					s.Failures++
				}
			}
			mu.Lock()
			total.merge(s)
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	total.Elapsed = time.Since(start)
	return total
}

// handoff measures one hot key under blocking Lock: handoffs per second and
// the wait for the lock, with the workers in one process (sharing one
// client) or spread over several processes.
func handoff(o options, stdout, stderr io.Writer) int {
	fmt.Fprintf(stdout, "\nhot key handoffs (blocking Lock), %v per configuration\n", o.duration)
	fmt.Fprintf(stdout, "%-8s %7s %5s %6s %11s %10s %10s %10s %9s %10s\n", "lib", "workers", "procs", "hold", "handoffs/s", "p50 wait", "p99 wait", "max wait", "failures", "unfinished")
	// The reference: one uncontended worker's cycle rate on one key.
	for _, lib := range o.libs {
		s, err := runProcs(o, lib, 1, 1, 0)
		if err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		handoffRow(stdout, lib, 1, 1, 0, s, "  (uncontended reference)")
	}
	for _, w := range o.workers {
		for _, hold := range o.holds {
			for _, p := range o.procs {
				for _, lib := range o.libs {
					s, err := runProcs(o, lib, w, p, hold)
					if err != nil {
						fmt.Fprintln(stderr, "bench:", err)
						return 1
					}
					handoffRow(stdout, lib, w, p, hold, s, leftover(o.addrs, s.Key))
				}
			}
		}
	}
	return 0
}

// handoffRow prints one configuration's line of the handoff table. Waits
// still running when the run ended count at their length so far (measure).
func handoffRow(stdout io.Writer, lib string, w, p int, hold time.Duration, s *stats, note string) {
	fmt.Fprintf(stdout, "%-8s %7d %5d %6v %11.0f %10v %10v %10v %9d %10d %s\n", lib, w, p, hold, s.rate(),
		s.pct(0.5).Round(time.Microsecond), s.pct(0.99).Round(time.Microsecond), s.pct(1).Round(time.Microsecond), s.Failures, s.Unfinished, note)
}

// runProcs runs w workers of lib spread over p child processes, all on one
// key, and merges their stats.
func runProcs(o options, lib string, w, p int, hold time.Duration) (*stats, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	startAt := time.Now().Add(300 * time.Millisecond).UnixNano()
	// A key per run: a peer that leaves a key behind when its context ends
	// must not slow the next run down.
	key := fmt.Sprintf("bench/hot/%s/%d/%d/%v/%d", lib, w, p, hold, startAt)
	outs := make([]strings.Builder, p)
	cmds := make([]*exec.Cmd, p)
	for i := 0; i < p; i++ {
		n := w / p
		if i < w%p {
			n++
		}
		cmds[i] = exec.Command(exe, "child", "-lib", lib, "-addrs", strings.Join(o.addrs, ","), "-key", key,
			"-workers", strconv.Itoa(n), "-hold", hold.String(), "-duration", o.duration.String(),
			"-start", strconv.FormatInt(startAt, 10))
		cmds[i].Stdout, cmds[i].Stderr = &outs[i], os.Stderr
		if err := cmds[i].Start(); err != nil {
			return nil, err
		}
	}
	total := &stats{Key: key}
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			return nil, fmt.Errorf("child %d: %w", i, err)
		}
		var s stats
		if err := json.Unmarshal([]byte(outs[i].String()), &s); err != nil {
			return nil, fmt.Errorf("child %d output: %w", i, err)
		}
		total.merge(s)
	}
	return total, nil
}

// child runs hot-key workers in this process and prints their stats as JSON.
func child(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("child", flag.ContinueOnError)
	lib := fs.String("lib", "redlock", "")
	key := fs.String("key", "bench/hot", "")
	addrs := fs.String("addrs", "", "")
	workers := fs.Int("workers", 1, "")
	hold := fs.Duration("hold", 0, "")
	duration := fs.Duration("duration", time.Second, "")
	startAt := fs.Int64("start", 0, "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	l, err := newLocker(*lib, strings.Split(*addrs, ","))
	if err != nil {
		fmt.Fprintln(stderr, "bench child:", err)
		return 1
	}
	defer l.close()
	time.Sleep(time.Until(time.Unix(0, *startAt)))
	s := measure(*workers, *duration, true, func(ctx context.Context, _ int) (time.Duration, bool) {
		start := time.Now()
		unlock, ok := l.lock(ctx, *key)
		wait := time.Since(start)
		if !ok {
			return wait, false
		}
		if *hold > 0 {
			time.Sleep(*hold)
		}
		unlock()
		return wait, true
	})
	s.Elapsed = *duration
	if err := json.NewEncoder(stdout).Encode(s); err != nil {
		return 1
	}
	return 0
}

// leftover reports on how many nodes key still exists after a run: a lock
// left behind by a client whose context ended blocks the key until its TTL.
func leftover(addrs []string, key string) string {
	n := 0
	for _, a := range addrs {
		c, err := redis.Dial("tcp", a)
		if err != nil {
			continue
		}
		if e, _ := redis.Int(c.Do("EXISTS", key)); e > 0 {
			n++
		}
		c.Close()
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("(key left behind on %d nodes)", n)
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
