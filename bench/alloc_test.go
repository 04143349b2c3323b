package main

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/redlockgo/redlock/internal/redistest"
)

// BenchmarkCycle measures one worker's TryLock+Unlock cycles on 5 local
// nodes for redlock (pipelined and pool-per-call), redsync and the
// hand-written floor: ns/op is the single-worker cycle latency and allocs/op
// the allocations per cycle (docs/benchmarks.md).
func BenchmarkCycle(b *testing.B) {
	servers := redistest.Start(b, 5)
	addrs := redistest.Addrs(servers)
	for _, lib := range []string{"floor", "redlock", "redlock-pool", "redsync"} {
		b.Run(lib, func(b *testing.B) {
			l, err := newLocker(lib, addrs)
			if err != nil {
				b.Fatal(err)
			}
			defer l.close()
			ctx := context.Background()
			for i := 0; i < 100; i++ { // first contact, warm connections
				l.cycle(ctx, fmt.Sprint("warm", i))
			}
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.ResetTimer()
			// A key of its own: the floor's releases can overtake its own
			// straggling acquires (they travel on different connections) and
			// leave keys behind for a TTL, which would make the next
			// implementation's cycles meet refusals.
			key := "cycle-" + lib
			for i := 0; i < b.N; i++ {
				if !l.cycle(ctx, key) {
					b.Fatal("cycle failed")
				}
			}
			b.StopTimer()
			// The client's own CPU time (the servers are other processes):
			// unlike ns/op, it hardly moves when other work shares the cores.
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime returns the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
