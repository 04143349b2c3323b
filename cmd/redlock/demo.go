package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redlockgo/redlock"
)

// demoConfig is what `redlock demo` runs.
type demoConfig struct {
	nodes    int
	workers  int
	clients  int
	ttl      time.Duration
	duration time.Duration
	kind     string
	key      string
	timeline string // SVG file to draw, "" for none
	verbose  bool   // print the library's warnings to the progress output
}

// demoSummary is what a demo run observed.
type demoSummary struct {
	grants          int64
	handoffs        int64 // grants to a different worker than the previous holder
	crossClient     int64 // grants to a worker of a different Client than the previous holder
	counter         int64 // the shared resource's final value
	overlaps        int64 // grants while another worker still held the lock within its validity
	overruns        int64 // holders still in their critical section after Until
	failedAttempts  int64 // Lock calls that returned an error before the end of the run
	unreachable     int64 // of which: quorum unreachable
	waits           []time.Duration
	events          []string
	nodeDescription string

	// Fencing: every grant's token must exceed the previous grant's.
	fenceFirst, fenceLast uint64
	fenceRegressions      int64

	// For the timeline.
	holds      []hold
	nodeEvents []nodeEvent
	elapsed    time.Duration
}

// hold is one grant, from the worker's Lock returning to its Unlock, in time
// since the start of the run.
type hold struct {
	worker   int
	from, to time.Duration
}

// nodeEvent is a node crash or restart, in time since the start of the run.
type nodeEvent struct {
	at      time.Duration
	node    int // 0-based
	crashed bool
}

func (s *demoSummary) lostUpdates() int64 { return s.grants - s.counter }

func demoCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := demoConfig{key: "redlock-demo/counter"}
	fs.IntVar(&cfg.nodes, "nodes", 5, "number of embedded Redis nodes")
	fs.IntVar(&cfg.workers, "workers", 6, "contending workers")
	fs.IntVar(&cfg.clients, "clients", 2, "redlock Clients the workers are spread over")
	fs.DurationVar(&cfg.ttl, "ttl", 2*time.Second, "lock TTL")
	fs.DurationVar(&cfg.duration, "duration", 8*time.Second, "how long the workers contend")
	fs.BoolVar(&cfg.verbose, "verbose", false, "print the library's warnings as they happen (node failures, unreachable quorums, losses)")
	fs.StringVar(&cfg.timeline, "timeline", "", "write an SVG `FILE` drawing each worker's holds and the node events on one time axis")
	fs.StringVar(&cfg.kind, "embedded", kindAuto, "embedded nodes: auto (redis-server if on PATH, else miniredis), redis-server or miniredis")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: redlock demo [flags]

Starts local Redis nodes, runs workers that contend for one lock to increment
a shared counter, crashes nodes part-way and restarts them empty after the TTL
(a "delayed restart"), and prints what happened: grants, handoffs, lost
updates (must be 0), whether the fencing tokens of successive grants
increased, and node events. Exits 1 if a safety check failed.

examples:
  redlock demo
  redlock demo --duration 20s --workers 10 --timeline demo.svg
  redlock demo --embedded miniredis --ttl 500ms

flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "redlock demo: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	switch {
	case cfg.nodes < 1:
		fmt.Fprintln(stderr, "redlock demo: --nodes must be at least 1")
		return exitUsage
	case cfg.workers < 1 || cfg.clients < 1:
		fmt.Fprintln(stderr, "redlock demo: --workers and --clients must be at least 1")
		return exitUsage
	case cfg.ttl < 10*time.Millisecond || cfg.duration <= 0:
		fmt.Fprintln(stderr, "redlock demo: --ttl must be at least 10ms and --duration positive")
		return exitUsage
	}
	s, err := runDemo(context.Background(), cfg, stdout)
	if err != nil {
		fmt.Fprintln(stderr, "redlock demo:", err)
		return exitFailure
	}
	printSummary(stdout, cfg, s)
	if cfg.timeline != "" {
		if err := writeTimelineFile(cfg.timeline, cfg, s); err != nil {
			fmt.Fprintln(stderr, "redlock demo:", err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "\ntimeline written to %s\n", cfg.timeline)
	}
	if s.lostUpdates() != 0 || s.overlaps != 0 || s.overruns != 0 || s.fenceRegressions != 0 {
		fmt.Fprintln(stderr, "redlock demo: SAFETY CHECK FAILED")
		return exitFailure
	}
	return exitOK
}

// runDemo starts the nodes, runs the workers and the node nemesis, and
// returns what it observed. Progress goes to out.
func runDemo(ctx context.Context, cfg demoConfig, out io.Writer) (*demoSummary, error) {
	nodes, desc, err := startEmbedded(cfg.kind, cfg.nodes)
	if err != nil {
		return nil, err
	}
	defer closeNodes(nodes)
	addrs := nodeAddrs(nodes)
	clients := make([]*redlock.Client, cfg.clients)
	for i := range clients {
		opts := []redlock.Option{redlock.WithFencing()}
		if cfg.verbose {
			opts = append(opts, redlock.WithObserver(redlock.SlogObserver(verboseLogger(out, slog.LevelWarn))))
		}
		c, err := redlock.Dial(addrs, opts...)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		clients[i] = c
	}
	fmt.Fprintf(out, "redlock demo: %d %s at %s\n", len(nodes), desc, strings.Join(addrs, " "))
	fmt.Fprintf(out, "%d workers over %d clients contend for %q (ttl %v) for %v\n\n", cfg.workers, cfg.clients, cfg.key, cfg.ttl, cfg.duration)

	s := &demoSummary{nodeDescription: desc}
	start := time.Now()
	runCtx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()

	var (
		mu           sync.Mutex // guards the fields below and s.waits/s.events
		holder       = -1       // worker inside its critical section, -1 if none
		holderUntil  time.Time
		lastWorker   = -1
		counter      int64  // the protected resource: read, pause, write back
		downMask     uint64 // nodes crashed and not yet restarted
		lastFence    uint64 // the previous grant's fencing token
		grants       atomic.Int64
		failed, unrc atomic.Int64
	)
	event := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		s.events = append(s.events, fmt.Sprintf("%5.1fs  ", time.Since(start).Seconds())+fmt.Sprintf(format, args...))
	}

	var wg sync.WaitGroup
	for w := 0; w < cfg.workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := clients[w%len(clients)]
			for runCtx.Err() == nil {
				asked := time.Now()
				l, err := c.Lock(runCtx, cfg.key, cfg.ttl)
				if err != nil {
					if runCtx.Err() == nil {
						failed.Add(1)
						if errors.Is(err, redlock.ErrQuorumUnreachable) {
							unrc.Add(1)
						}
					}
					continue
				}
				mu.Lock()
				s.waits = append(s.waits, time.Since(asked))
				if holder >= 0 && time.Now().Before(holderUntil) {
					s.overlaps++
				}
				if f := l.Fence(); f <= lastFence {
					s.fenceRegressions++
				} else if lastFence == 0 {
					s.fenceFirst = f
				}
				lastFence = max(lastFence, l.Fence())
				granted := time.Since(start)
				if lastWorker != w {
					s.handoffs++
					if lastWorker >= 0 && lastWorker%len(clients) != w%len(clients) {
						s.crossClient++
					}
				}
				holder, holderUntil, lastWorker = w, l.Until(), w
				v := counter
				mu.Unlock()
				grants.Add(1)

				time.Sleep(time.Duration(1+rand.IntN(5)) * time.Millisecond) // work on the resource

				mu.Lock()
				counter = v + 1
				if !time.Now().Before(l.Until()) {
					s.overruns++
				}
				holder = -1
				s.holds = append(s.holds, hold{worker: w, from: granted, to: time.Since(start)})
				mu.Unlock()
				l.Unlock(context.Background())
			}
		}(w)
	}

	// The nemesis crashes two nodes in turn and restarts each empty only
	// after the TTL has passed, as the algorithm requires of operators.
	wg.Add(1)
	go func() {
		defer wg.Done()
		victims := []int{1 % len(nodes), 3 % len(nodes)}
		for k, v := range victims {
			at := cfg.duration * time.Duration(1+3*k) / 8
			if !sleepUntil(runCtx, start.Add(at)) {
				return
			}
			nodes[v].Crash()
			mu.Lock()
			downMask |= 1 << v
			s.nodeEvents = append(s.nodeEvents, nodeEvent{at: time.Since(start), node: v, crashed: true})
			mu.Unlock()
			event("node %d crashed (data lost)", v+1)
			if !sleepUntil(runCtx, time.Now().Add(cfg.ttl+cfg.ttl/4)) {
				return
			}
			if err := nodes[v].Restart(); err != nil {
				event("node %d failed to restart: %v", v+1, err)
				continue
			}
			mu.Lock()
			downMask &^= 1 << v
			s.nodeEvents = append(s.nodeEvents, nodeEvent{at: time.Since(start), node: v})
			mu.Unlock()
			event("node %d restarted empty, %v after its crash (longer than the ttl)", v+1, (cfg.ttl + cfg.ttl/4).Round(time.Millisecond))
		}
	}()

	// Live progress.
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				mu.Lock()
				h, down := s.handoffs, downMask
				mu.Unlock()
				fmt.Fprintf(out, "%5.1fs  grants %6d  handoffs %6d  nodes %s\n",
					time.Since(start).Seconds(), grants.Load(), h, nodeStates(len(nodes), down))
			}
		}
	}()
	wg.Wait()

	s.grants, s.counter, s.fenceLast, s.elapsed = grants.Load(), counter, lastFence, time.Since(start)
	s.failedAttempts, s.unreachable = failed.Load(), unrc.Load()
	return s, nil
}

func nodeStates(n int, down uint64) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if down&(1<<i) != 0 {
			b.WriteString("x")
		} else {
			b.WriteString("o")
		}
	}
	return b.String()
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

func printSummary(w io.Writer, cfg demoConfig, s *demoSummary) {
	sort.Slice(s.waits, func(i, j int) bool { return s.waits[i] < s.waits[j] })
	pct := func(p float64) time.Duration {
		if len(s.waits) == 0 {
			return 0
		}
		return s.waits[int(p*float64(len(s.waits)-1))].Round(time.Microsecond)
	}
	fmt.Fprintf(w, "\nnode events\n")
	for _, e := range s.events {
		fmt.Fprintf(w, "  %s\n", e)
	}
	fmt.Fprintf(w, "\nsummary (%d nodes, quorum %d)\n", cfg.nodes, cfg.nodes/2+1)
	fmt.Fprintf(w, "  grants          %d\n", s.grants)
	fmt.Fprintf(w, "  handoffs        %d between workers, %d between clients\n", s.handoffs, s.crossClient)
	fmt.Fprintf(w, "  lost updates    %d (counter %d, increments acknowledged %d)\n", s.lostUpdates(), s.counter, s.grants)
	fmt.Fprintf(w, "  overlaps        %d (a grant while another holder was still valid)\n", s.overlaps)
	fmt.Fprintf(w, "  overruns        %d (work still running after Until)\n", s.overruns)
	if s.fenceRegressions == 0 {
		fmt.Fprintf(w, "  fencing tokens  monotonic (each grant's token above the previous one: %d .. %d)\n", s.fenceFirst, s.fenceLast)
	} else {
		fmt.Fprintf(w, "  fencing tokens  NOT monotonic: %d grants had a token not above the previous grant's\n", s.fenceRegressions)
	}
	fmt.Fprintf(w, "  wait for lock   p50 %v  p99 %v  max %v\n", pct(0.5), pct(0.99), pct(1))
	fmt.Fprintf(w, "  failed attempts %d (%d quorum unreachable)\n", s.failedAttempts, s.unreachable)
}
