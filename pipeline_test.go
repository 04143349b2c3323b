package redlock

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redlockgo/redlock/internal/redistest"
)

// connectedClients returns the number of client connections of a node.
func connectedClients(t *testing.T, s *redistest.Server) int {
	t.Helper()
	info, err := redis.String(s.Do("INFO", "clients"))
	require.NoError(t, err)
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "connected_clients:"); ok {
			var n int
			fmt.Sscan(v, &n)
			return n - 1 // our own INFO connection
		}
	}
	t.Fatal("no connected_clients in INFO")
	return 0
}

// Many goroutines share one pipelined connection per node; with the pool
// transport each needs its own.
func TestPipelineSharesOneConnection(t *testing.T) {
	for _, pipelined := range []bool{true, false} {
		t.Run(fmt.Sprint("pipelined=", pipelined), func(t *testing.T) {
			servers, c := cluster(t, 3, WithPipelining(pipelined))
			ctx := context.Background()
			var wg sync.WaitGroup
			var mu sync.Mutex
			ok, missed := 0, 0
			for w := 0; w < 64; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for i := 0; i < 20; i++ {
						l, err := c.TryLock(ctx, fmt.Sprint("k", w), 10*time.Second)
						mu.Lock()
						if err == nil {
							ok++
						} else {
							// On an overloaded machine a per-node timeout leaves the
							// outcome of a command unknown; a late one can hold the
							// key until its TTL. Count, do not fail.
							missed++
						}
						mu.Unlock()
						if err == nil {
							assert.NoError(t, l.Unlock(ctx))
						}
					}
				}(w)
			}
			wg.Wait()
			assert.Less(t, missed, (ok+missed)/10, "misses on distinct keys must stay rare")
			conns := connectedClients(t, servers[0])
			t.Logf("connections to one node after 64 concurrent workers: %d", conns)
			if pipelined {
				assert.Equal(t, 1, conns)
			} else {
				assert.Greater(t, conns, 4)
			}
		})
	}
}

// A paused node fails the calls waiting on its pipelined connection at the
// deadline, and the connection is replaced once the node is back.
func TestPipelineRecoversFromPausedNode(t *testing.T) {
	servers, c := cluster(t, 3, WithNodeTimeout(200*time.Millisecond))
	ctx := context.Background()
	l, err := c.TryLock(ctx, "warm", time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Unlock(ctx))

	servers[0].Pause()
	servers[1].Pause()
	start := time.Now()
	_, err = c.TryLock(ctx, "k", 10*time.Second)
	assert.ErrorIs(t, err, ErrQuorumUnreachable)
	assert.ErrorIs(t, err, ErrNodeTimeout)
	assert.Less(t, time.Since(start), 2*time.Second, "bounded by the per-node timeout")
	servers[0].Resume()
	servers[1].Resume()

	require.Eventually(t, func() bool {
		l, err := c.TryLock(ctx, "k2", 10*time.Second)
		if err != nil {
			return false
		}
		return l.Unlock(ctx) == nil
	}, 5*time.Second, 50*time.Millisecond, "the nodes are usable again")
}

// Scripts flushed between calls: EVALSHA fails with NOSCRIPT and the
// transport falls back to EVAL, on both transports (the pipelined one
// because nothing is queued behind the command; see TestNoScriptKeepsOrder).
func TestScriptFlushFallback(t *testing.T) {
	for _, pipelined := range []bool{true, false} {
		t.Run(fmt.Sprint("pipelined=", pipelined), func(t *testing.T) {
			servers, c := cluster(t, 3, WithPipelining(pipelined))
			ctx := context.Background()
			for i := 0; i < 3; i++ {
				for _, s := range servers {
					_, err := s.Do("SCRIPT", "FLUSH")
					require.NoError(t, err)
				}
				l, err := c.TryLock(ctx, "k", time.Second)
				require.NoError(t, err)
				for _, s := range servers {
					_, err := s.Do("SCRIPT", "FLUSH")
					require.NoError(t, err)
				}
				require.NoError(t, l.Unlock(ctx))
			}
		})
	}
}

// A script's command that meets NOSCRIPT on a pipelined connection (the
// node lost its scripts while the connection was open) goes again as EVAL
// only if nothing was queued behind it: sent again at the end of the queue,
// it would run after commands that were queued after it and have already
// run. Here a SET by script, then a DEL of the same key: in order, the key
// is gone. Either way the node is marked for a restart check: a lost script
// may mean a restart behind a proxy.
func TestNoScriptKeepsOrder(t *testing.T) {
	servers, c := cluster(t, 1, WithNodeTimeout(5*time.Second))
	s, n, tr := servers[0], c.nodes[0], c.nodes[0].t.(*pipeTransport)
	suspected := func(clear bool) bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		was := n.g.recheck
		if clear {
			n.g.recheck = false
		}
		return was
	}
	set := newScript(1, "return redis.call('SET', KEYS[1], ARGV[1])")
	ctx := context.Background()
	_, err := tr.eval(ctx, set, "k", "loaded")
	require.NoError(t, err)
	require.Zero(t, nodeCalls(t, servers, "evalsha"), "a script's first command on a connection goes as EVAL, meeting no NOSCRIPT")
	for _, behind := range []bool{false, true} {
		t.Run(fmt.Sprint("behind=", behind), func(t *testing.T) {
			suspected(true)
			do(t, s, "DEL", "k")
			do(t, s, "SCRIPT", "FLUSH")
			evalSHAs := nodeCalls(t, servers, "evalsha")
			do(t, s, "CLIENT", "PAUSE", 500, "ALL") // both commands queue before either runs
			res := make(chan error, 1)
			go func() {
				_, err := tr.eval(ctx, set, "k", "x")
				res <- err
			}()
			p := tr.live()
			require.Eventually(t, func() bool {
				p.mu.Lock()
				defer p.mu.Unlock()
				return p.waiting.n == 1
			}, 400*time.Millisecond, time.Millisecond, "the script's command is queued")
			if behind {
				_, err := tr.do(ctx, "DEL", "k")
				require.NoError(t, err)
			}
			err := <-res
			v, _ := redis.String(s.Do("GET", "k"))
			if behind {
				require.ErrorContains(t, err, "NOSCRIPT")
				require.True(t, isReplyError(err), "a reply: the command did not run")
				assert.Empty(t, v, "the SET ran after the DEL queued behind it")
			} else {
				require.NoError(t, err, "sent again as EVAL")
				assert.Equal(t, "x", v)
			}
			assert.Equal(t, int64(1), nodeCalls(t, servers, "evalsha")-evalSHAs, "sent as EVALSHA once the connection had loaded the script")
			assert.True(t, suspected(false), "the node was not marked for a restart check")
		})
	}
}

// An EVAL that the node refuses before loading the script (here BUSY: another
// client's script runs too long) leaves the script unloaded on the
// connection: the next command goes as EVAL again, not as an EVALSHA bound
// to meet NOSCRIPT (which, with commands queued behind it, would fail).
func TestRefusedEvalSendsEvalAgain(t *testing.T) {
	servers, c := cluster(t, 1, WithNodeTimeout(5*time.Second))
	s, tr := servers[0], c.nodes[0].t.(*pipeTransport)
	set := newScript(1, "return redis.call('SET', KEYS[1], ARGV[1])")
	ctx := context.Background()
	do(t, s, "CONFIG", "SET", "busy-reply-threshold", 50)
	busy := make(chan error, 1)
	go func() {
		_, err := s.Do("EVAL", "while true do end", 0)
		busy <- err
	}()
	require.Eventually(t, func() bool {
		_, err := s.Do("PING")
		return err != nil && strings.HasPrefix(err.Error(), "BUSY")
	}, 2*time.Second, 10*time.Millisecond, "the node answers BUSY")
	_, err := tr.eval(ctx, set, "k", "refused") // the script's first command on the connection
	require.ErrorContains(t, err, "BUSY")
	_, err = s.Do("SCRIPT", "KILL")
	require.NoError(t, err)
	require.Error(t, <-busy, "the long script was killed")
	evalSHAs := nodeCalls(t, servers, "evalsha")
	_, err = tr.eval(ctx, set, "k", "v")
	require.NoError(t, err)
	assert.Equal(t, evalSHAs, nodeCalls(t, servers, "evalsha"), "the script went as EVAL again")
	v, _ := redis.String(s.Do("GET", "k"))
	assert.Equal(t, "v", v)
}

// The core behaviours hold on the pool-per-call transport too.
func TestPoolTransport(t *testing.T) {
	servers, c := cluster(t, 5, WithPipelining(false), WithNodeTimeout(2*time.Second))
	other := dial(t, servers, WithPipelining(false))
	ctx := context.Background()
	l, err := c.TryLock(ctx, "k", 10*time.Second)
	require.NoError(t, err)
	_, err = other.TryLock(ctx, "k", time.Second)
	assert.ErrorIs(t, err, ErrNotObtained)
	assert.NotErrorIs(t, err, ErrQuorumUnreachable)
	require.NoError(t, l.Extend(ctx, 20*time.Second))
	require.NoError(t, l.Unlock(ctx))

	servers[4].Pause()
	defer servers[4].Resume()
	start := time.Now()
	l, err = c.TryLock(ctx, "k", 10*time.Second)
	require.NoError(t, err)
	assert.Less(t, time.Since(start), time.Second, "a paused node costs no timeout")
	require.NoError(t, l.Unlock(ctx))
	servers[4].Resume()

	for _, s := range servers[:3] {
		s.Kill()
	}
	_, err = c.TryLock(ctx, "k", 10*time.Second)
	assert.ErrorIs(t, err, ErrQuorumUnreachable)
}

// Waiters whose context ends while their commands are in flight must not
// leave keys behind: an abandoned call must not fail the shared connection
// and the cleanup releases queued behind it (a regression: one run in four
// left a fresh key on two nodes).
func TestNoKeysLeftByCancelledWaiters(t *testing.T) {
	servers := redistest.Start(t, 5)
	for run := 0; run < 4; run++ {
		c, err := Dial(redistest.Addrs(servers))
		require.NoError(t, err)
		key := fmt.Sprint("hot", run)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var wg sync.WaitGroup
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					l, err := c.Lock(ctx, key, 10*time.Second)
					if err != nil {
						continue
					}
					time.Sleep(time.Millisecond)
					assert.NoError(t, l.Unlock(context.Background()))
				}
			}()
		}
		wg.Wait()
		cancel()
		require.NoError(t, c.Close())
		for _, s := range servers {
			v, pttl := holder(t, s, key)
			assert.Equal(t, "", v, "run %d: key left on %s (pttl %d)", run, s.Addr, pttl)
		}
	}
}

// Nodes that close idle connections (Redis's `timeout`, here 1 s; proxies
// and firewalls do the same) cost nothing: the first command after the idle
// spell finds its connection closed before sending, and goes out on a new
// one. Without the check, the Unlock below failed on every node ("EOF",
// quorum unreachable) and left the key until its TTL.
func TestNodesClosingIdleConnections(t *testing.T) {
	certs := redistest.NewCerts(t)
	for _, tt := range []struct {
		name string
		up   func() ([]*redistest.Server, []Option)
	}{
		{"tcp", func() ([]*redistest.Server, []Option) { return redistest.Start(t, 3, "--timeout", "1"), nil }},
		{"tls", func() ([]*redistest.Server, []Option) {
			return redistest.StartTLS(t, 3, certs.ServerTLS(true), "--timeout", "1"), []Option{WithTLSConfig(certs.ClientConfig())}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			servers, opts := tt.up()
			c, err := Dial(redistest.Addrs(servers), opts...)
			require.NoError(t, err)
			defer c.Close()
			// First contact first, and the acquire answered everywhere
			// before the idle spell: this test is about connections the
			// nodes closed, not about a first contact slow enough under
			// load (it has a 1 s timeout here) to leave the acquire's
			// outcome on a node unknown.
			warm(t, c)
			ctx := context.Background()
			l, err := c.TryLock(ctx, "k", time.Minute)
			require.NoError(t, err)
			l.acq.waitAll()
			idle := func() {
				// Redis closes a connection idle for more than 1 s within its
				// next clients cron pass (10 per second): wait until every
				// node has.
				require.Eventually(t, func() bool {
					for _, s := range servers {
						list, err := redis.String(s.Do("CLIENT", "LIST"))
						require.NoError(t, err)
						if strings.Count(list, "\n") > 1 { // only the probe's own connection
							return false
						}
					}
					return true
				}, 10*time.Second, 50*time.Millisecond, "the nodes never closed the idle connections")
			}
			idle()
			require.NoError(t, l.Unlock(ctx), "the release after an idle spell")
			func() {
				defer func() {
					if t.Failed() { // keyGone names the holders: ours, or another client's?
						t.Logf("the released lock's token: %s", l.Token())
					}
				}()
				keyGone(t, servers, "k", time.Second)
			}()
			idle()
			l, err = c.TryLock(ctx, "k", time.Minute)
			require.NoError(t, err, "the acquire after an idle spell")
			idle()
			require.NoError(t, l.Extend(ctx, time.Minute), "the extension after an idle spell")
			require.NoError(t, l.Unlock(ctx))
		})
	}
}
