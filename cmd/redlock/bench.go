package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redlockgo/redlock"
)

const benchUsage = `usage: redlock bench [flags]

Measures lock throughput and latency, like redis-benchmark for locks: workers
acquire a key (Lock, waiting), release it at once, and repeat for --duration.
With --keys 1 all workers contend for one hot key; with --keys at least
--workers they rarely meet. Runs against --nodes ($REDLOCK_NODES), or, when
none are given, against --embedded local nodes.

examples:
  redlock bench                                   # 5 embedded nodes, 8 workers, 1000 keys
  redlock bench --keys 1 --workers 16             # one hot key
  redlock bench --nodes h1:6379,h2:6379,h3:6379 --duration 30s --fencing

flags:
`

type benchConfig struct {
	nodeFlags
	workers, keys, clients, embeddedNodes int
	duration, ttl                         time.Duration
	fencing                               bool
	embedded                              string
}

// benchResult is what a run measured.
type benchResult struct {
	elapsed time.Duration
	// acquire holds every Lock's wait, including the unfinished ones that
	// the end of the run cut short, each at its length so far (a lower
	// bound: leaving them out would leave out the longest waits); release
	// holds one Unlock per cycle.
	acquire, release []time.Duration
	failed           int
	unfinished       int
}

func benchCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg benchConfig
	cfg.nodeFlags.register(fs)
	fs.IntVar(&cfg.workers, "workers", 8, "concurrent workers")
	fs.IntVar(&cfg.keys, "keys", 1000, "distinct keys the workers cycle over (1: one hot key)")
	fs.IntVar(&cfg.clients, "clients", 1, "redlock Clients the workers are spread over")
	fs.DurationVar(&cfg.duration, "duration", 5*time.Second, "how long to run")
	fs.DurationVar(&cfg.ttl, "ttl", 10*time.Second, "lock TTL")
	fs.BoolVar(&cfg.fencing, "fencing", false, "acquire with fencing tokens (two rounds per acquisition)")
	fs.StringVar(&cfg.embedded, "embedded", kindAuto, "embedded nodes when no --nodes: auto, redis-server or miniredis")
	fs.IntVar(&cfg.embeddedNodes, "embedded-nodes", 5, "number of embedded nodes")
	fs.Usage = func() { fmt.Fprint(stderr, benchUsage); fs.PrintDefaults() }
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "redlock bench: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	case cfg.workers < 1 || cfg.keys < 1 || cfg.clients < 1 || cfg.embeddedNodes < 1:
		fmt.Fprintln(stderr, "redlock bench: --workers, --keys, --clients and --embedded-nodes must be at least 1")
		return exitUsage
	case cfg.duration <= 0 || cfg.ttl < 10*time.Millisecond:
		fmt.Fprintln(stderr, "redlock bench: --duration must be positive and --ttl at least 10ms")
		return exitUsage
	}
	if cfg.nodes == "" && os.Getenv(nodesEnv) == "" {
		nodes, desc, err := startEmbedded(cfg.embedded, cfg.embeddedNodes)
		if err != nil {
			fmt.Fprintln(stderr, "redlock bench:", err)
			return exitUsage
		}
		defer closeNodes(nodes)
		addrs := nodeAddrs(nodes)
		cfg.nodes = strings.Join(addrs, ",")
		fmt.Fprintf(stdout, "embedded: %d %s\n", len(nodes), desc)
	}
	var opts []redlock.Option
	if cfg.fencing {
		opts = append(opts, redlock.WithFencing())
	}
	clients := make([]*redlock.Client, cfg.clients)
	for i := range clients {
		c, err := cfg.client(opts...)
		if err != nil {
			fmt.Fprintln(stderr, "redlock bench:", err)
			return exitUsage
		}
		defer c.Close()
		clients[i] = c
	}
	fmt.Fprintf(stdout, "nodes %s\n%d workers over %d clients, %d keys, ttl %v, fencing %v, for %v\n",
		cfg.nodes, cfg.workers, cfg.clients, cfg.keys, cfg.ttl, cfg.fencing, cfg.duration)
	r := runBench(context.Background(), cfg, clients)
	printBench(stdout, r)
	if len(r.release) == 0 {
		fmt.Fprintln(stderr, "redlock bench: no lock was acquired")
		return exitFailure
	}
	return exitOK
}

// runBench runs the workers for cfg.duration and collects their latencies.
func runBench(ctx context.Context, cfg benchConfig, clients []*redlock.Client) benchResult {
	ctx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	var (
		mu  sync.Mutex
		res benchResult
		wg  sync.WaitGroup
	)
	start := time.Now()
	for w := 0; w < cfg.workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := clients[w%len(clients)]
			var acq, rel []time.Duration
			failed, unfinished := 0, 0
			for i := 0; ctx.Err() == nil; i++ {
				key := fmt.Sprintf("redlock-bench:%d", (w+i*cfg.workers)%cfg.keys)
				t0 := time.Now()
				l, err := c.Lock(ctx, key, cfg.ttl)
				if err != nil {
					if ctx.Err() == nil {
						failed++
					} else {
						unfinished++
						acq = append(acq, time.Since(t0))
					}
					continue
				}
				t1 := time.Now()
				_ = l.Unlock(context.Background())
				acq, rel = append(acq, t1.Sub(t0)), append(rel, time.Since(t1))
			}
			mu.Lock()
			res.acquire = append(res.acquire, acq...)
			res.release = append(res.release, rel...)
			res.failed += failed
			res.unfinished += unfinished
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}

func printBench(w io.Writer, r benchResult) {
	n := len(r.release)
	fmt.Fprintf(w, "\n%d acquire/release cycles in %v: %.0f locks/s\n", n, r.elapsed.Round(time.Millisecond), float64(n)/r.elapsed.Seconds())
	for _, s := range []struct {
		name string
		d    []time.Duration
	}{{"acquire", r.acquire}, {"release", r.release}} {
		slices.Sort(s.d)
		fmt.Fprintf(w, "  %-8s p50 %-10v p90 %-10v p99 %-10v p99.9 %-10v max %v\n", s.name,
			percentile(s.d, 0.5), percentile(s.d, 0.9), percentile(s.d, 0.99), percentile(s.d, 0.999), percentile(s.d, 1))
	}
	fmt.Fprintf(w, "  failed acquisitions %d, unfinished at the end %d (in acquire, at their wait so far)\n", r.failed, r.unfinished)
}

// percentile of sorted durations, rounded for display; 0 for none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(p*float64(len(sorted)-1))].Round(time.Microsecond)
}
