package main

import (
	"context"
	"fmt"
	"testing"

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
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if !l.cycle(ctx, "cycle") {
					b.Fatal("cycle failed")
				}
			}
		})
	}
}
