package redlock

import (
	"context"
	"testing"
	"time"

	"github.com/redlockgo/redlock/internal/redistest"
)

// BenchmarkFencing measures one TryLock+Unlock on 5 local nodes, with and
// without fencing; docs/fencing.md records the figures.
func BenchmarkFencing(b *testing.B) {
	servers := redistest.Start(b, 5)
	for _, bc := range []struct {
		name string
		opts []Option
	}{
		{"plain", nil},
		{"fenced", []Option{WithFencing()}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c, err := Dial(redistest.Addrs(servers), bc.opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				l, err := c.TryLock(ctx, "bench", 10*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				if err := l.Unlock(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
