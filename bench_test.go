package redlock

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redlockgo/redlock/internal/redistest"
)

// BenchmarkTryLockUnlock measures full lock cycles (TryLock then Unlock) on
// distinct keys, for 1, 3 and 5 local nodes and several concurrent workers.
// ns/op is per cycle across all workers (so 1e9/ns-per-op is cycles/s).
func BenchmarkTryLockUnlock(b *testing.B) {
	servers := redistest.Start(b, 5)
	for _, n := range []int{1, 3, 5} {
		for _, workers := range []int{1, 16, 64, 256} {
			b.Run(fmt.Sprintf("nodes=%d/workers=%d", n, workers), func(b *testing.B) {
				c, err := Dial(redistest.Addrs(servers[:n]))
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				benchCycles(b, c, workers)
			})
		}
	}
}

func benchCycles(b *testing.B, c *Client, workers int) {
	ctx := context.Background()
	// First contact and warm connection pools outside the timing.
	for i := 0; i < workers; i++ {
		l, err := c.TryLock(ctx, fmt.Sprint("warm-", i), 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		l.Unlock(ctx)
	}
	var next atomic.Int64
	var failed atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			key := fmt.Sprint("bench-", w)
			for next.Add(1) <= int64(b.N) {
				l, err := c.TryLock(ctx, key, 10*time.Second)
				if err != nil {
					failed.Add(1)
					continue
				}
				if err := l.Unlock(ctx); err != nil {
					failed.Add(1)
				}
			}
		}(w)
	}
	wg.Wait()
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.ReportMetric(float64(f), "failures")
	}
}

// BenchmarkObserver measures the cost of the observer hook on full lock
// cycles over 3 local nodes, one worker: none (no WithObserver), empty (an
// Observer with no callbacks), count (callbacks that only count events:
// the events are built, node latencies measured) and slog (SlogObserver on
// a handler that discards records below Warn, as a production logger
// would). allocs/op of none and empty must equal those of
// BenchmarkTryLockUnlock/nodes=3/workers=1.
func BenchmarkObserver(b *testing.B) {
	servers := redistest.Start(b, 3)
	var n atomic.Int64
	count := Observer{
		Acquire: func(AcquireEvent) { n.Add(1) },
		Extend:  func(ExtendEvent) { n.Add(1) },
		Unlock:  func(UnlockEvent) { n.Add(1) },
		End:     func(EndEvent) { n.Add(1) },
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for _, bc := range []struct {
		name string
		opts []Option
	}{
		{"none", nil},
		{"empty", []Option{WithObserver(Observer{})}},
		{"count", []Option{WithObserver(count)}},
		{"slog", []Option{WithObserver(SlogObserver(quiet))}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c, err := Dial(redistest.Addrs(servers), bc.opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			benchCycles(b, c, 1)
		})
	}
}
