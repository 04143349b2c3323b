package prometheus_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redlockgo/redlock"
	"github.com/redlockgo/redlock/internal/redistest"
	redlockprom "github.com/redlockgo/redlock/metrics/prometheus"
)

// exampleNodes are three real redis-server processes for the example.
var exampleNodes []string

func TestMain(m *testing.M) {
	var servers []*redistest.Server
	for i := 0; i < 3; i++ {
		s, err := redistest.NewServer()
		if err != nil {
			fmt.Fprintln(os.Stderr, "metrics tests:", err)
			os.Exit(1)
		}
		servers = append(servers, s)
		exampleNodes = append(exampleNodes, s.Addr)
	}
	code := m.Run()
	for _, s := range servers {
		s.Close()
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func newClient(t *testing.T, servers []*redistest.Server, m *redlockprom.Metrics) *redlock.Client {
	t.Helper()
	c, err := redlock.Dial(redistest.Addrs(servers), redlock.WithObserver(m.Observer()), redlock.WithNodeTimeout(100*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestMetrics drives grants, contention, an unreachable quorum, renewals,
// a loss and unlocks against real servers and reads the registry.
func TestMetrics(t *testing.T) {
	servers := redistest.Start(t, 3)
	m := redlockprom.New()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(m))
	c := newClient(t, servers, m)
	ctx := context.Background()

	count := func(name string, labels ...string) float64 {
		t.Helper()
		mfs, err := reg.Gather()
		require.NoError(t, err)
		total := 0.0
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		metric:
			for _, met := range mf.GetMetric() {
				have := map[string]string{}
				for _, lp := range met.GetLabel() {
					have[lp.GetName()] = lp.GetValue()
				}
				for i := 0; i+1 < len(labels); i += 2 {
					if have[labels[i]] != labels[i+1] {
						continue metric
					}
				}
				switch {
				case met.GetCounter() != nil:
					total += met.GetCounter().GetValue()
				case met.GetGauge() != nil:
					total += met.GetGauge().GetValue()
				case met.GetHistogram() != nil:
					total += float64(met.GetHistogram().GetSampleCount())
				}
			}
		}
		return total
	}
	l, err := c.TryLock(ctx, "a", 5*time.Second)
	require.NoError(t, err)
	_, err = c.TryLock(ctx, "a", 5*time.Second)
	require.ErrorIs(t, err, redlock.ErrNotObtained)
	assert.Equal(t, 1.0, count("redlock_locks_held"))
	require.NoError(t, l.Extend(ctx, 5*time.Second))
	require.NoError(t, l.Unlock(ctx))

	assert.Equal(t, 1.0, count("redlock_acquisitions_total", "outcome", "granted"))
	assert.Equal(t, 1.0, count("redlock_acquisitions_total", "outcome", "contended"))
	assert.Equal(t, 2.0, count("redlock_acquire_duration_seconds"))
	assert.Equal(t, 1.0, count("redlock_extensions_total", "kind", "extend", "outcome", "ok"))
	assert.Equal(t, 1.0, count("redlock_unlocks_total", "outcome", "ok"))
	assert.Equal(t, 0.0, count("redlock_locks_held"))
	assert.Equal(t, 1.0, count("redlock_lock_held_seconds"))
	assert.GreaterOrEqual(t, count("redlock_node_requests_total", "op", "acquire"), 4.0, "two attempts decided by two nodes each at least")
	assert.Equal(t, count("redlock_node_requests_total"), count("redlock_node_request_duration_seconds"))
	assert.Equal(t, 0.0, count("redlock_node_errors_total"))

	// A majority killed while Do keeps a lock alive: renewals fail, then the loss.
	err = c.Do(ctx, "b", time.Second, func(fctx context.Context, l *redlock.Lock) error {
		assert.Equal(t, 1.0, count("redlock_locks_held"))
		first := l.Until()
		for !l.Until().After(first) {
			time.Sleep(5 * time.Millisecond)
		}
		servers[0].Kill()
		servers[1].Kill()
		select {
		case <-fctx.Done():
		case <-time.After(5 * time.Second):
			t.Error("loss not signalled")
		}
		return nil
	})
	require.ErrorIs(t, err, redlock.ErrLockLost)
	assert.GreaterOrEqual(t, count("redlock_extensions_total", "kind", "renewal", "outcome", "ok"), 1.0)
	if !assert.GreaterOrEqual(t, count("redlock_extensions_total", "kind", "renewal", "outcome", "unreachable"), 1.0) {
		for _, o := range []string{"ok", "lost", "unreachable", "cancelled", "error"} {
			t.Logf("renewal %s: %v", o, count("redlock_extensions_total", "kind", "renewal", "outcome", o))
		}
	}
	assert.Equal(t, 1.0, count("redlock_locks_lost_total"))
	assert.Equal(t, 0.0, count("redlock_locks_held"))
	assert.GreaterOrEqual(t, count("redlock_node_errors_total", "node", servers[0].Addr, "op", "renewal")+
		count("redlock_node_errors_total", "node", servers[1].Addr, "op", "renewal"), 1.0)

	_, err = c.TryLock(ctx, "c", time.Second)
	require.ErrorIs(t, err, redlock.ErrQuorumUnreachable)
	assert.Equal(t, 1.0, count("redlock_acquisitions_total", "outcome", "unreachable"))
	assert.Equal(t, 1.0, count("redlock_node_errors_total", "node", servers[0].Addr, "op", "acquire"))
	assert.Equal(t, 1.0, count("redlock_node_errors_total", "node", servers[1].Addr, "op", "acquire"))

	// A restarted node is counted once the Client sees its new run_id.
	require.NoError(t, servers[0].Restart())
	require.NoError(t, servers[1].Restart())
	require.Eventually(t, func() bool {
		if l, err := c.TryLock(ctx, "d", time.Second); err == nil {
			l.Unlock(ctx)
		}
		return count("redlock_node_events_total", "kind", "restarted") >= 1
	}, 10*time.Second, 10*time.Millisecond)

	// The exposition is valid and names only host:port nodes.
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	assert.Empty(t, problems)
	n, err := testutil.GatherAndCount(reg)
	require.NoError(t, err)
	assert.Greater(t, n, 10)
	for _, s := range servers {
		assert.True(t, strings.HasPrefix(s.Addr, "127.0.0.1:"))
	}
}
