package redlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redlockgo/redlock/internal/redistest"
)

// guardedNodes returns the addresses whose NodeError in err wraps ErrNodeGuarded.
func guardedNodes(err error) []string {
	var out []string
	var walk func(error)
	walk = func(e error) {
		if ne, ok := e.(*NodeError); ok {
			if errors.Is(ne.Err, ErrNodeGuarded) && !contains(out, ne.Addr) {
				out = append(out, ne.Addr)
			}
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, c := range u.Unwrap() {
				walk(c)
			}
		case interface{ WrappedErrors() []error }: // *multierror.Error
			for _, c := range u.WrappedErrors() {
				walk(c)
			}
		}
	}
	walk(err)
	return out
}

// grantedBy returns the nodes on which l's token is set.
func grantedBy(t *testing.T, servers []*redistest.Server, l *Lock) []string {
	t.Helper()
	var out []string
	for _, s := range servers {
		if v, _ := holder(t, s, l.name); v == l.Token() {
			out = append(out, s.Addr)
		}
	}
	return out
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// restartedNode starts three nodes and a Client that has used them all
// (TryLock and Unlock of "warm", whose short TTL keeps the guard window
// short), with "k" held by another owner on node 1 if refuse, then restarts
// node 0 empty.
func restartedNode(t *testing.T, refuse bool, opts ...Option) ([]*redistest.Server, *Client) {
	t.Helper()
	servers, c := cluster(t, 3, opts...)
	ctx := context.Background()
	l, err := c.TryLock(ctx, "warm", 800*time.Millisecond)
	require.NoError(t, err)
	require.NoError(t, l.Unlock(ctx))
	if refuse {
		_, err = servers[1].Do("SET", "k", "someone-else", "PX", 60000)
		require.NoError(t, err)
	}
	require.NoError(t, servers[0].Restart())
	return servers, c
}

func TestRestartGuardKeepsRestartedNodeOut(t *testing.T) {
	ctx := context.Background()
	ttl := 800 * time.Millisecond
	servers, c := restartedNode(t, false)
	restarted := time.Now()
	// The pool's idle connections to the old process fail once; the next
	// connection is new and its INFO reveals the new run_id.
	var guardedSeen bool
	for i := 0; i < 100 && !guardedSeen; i++ {
		l, err := c.TryLock(ctx, "k", ttl)
		require.NoError(t, err, "two healthy nodes of three still make a quorum")
		assert.NotContains(t, grantedBy(t, servers, l), servers[0].Addr, "a restarted node must not count during its guard")
		require.NoError(t, l.Unlock(ctx))
		c.nodes[0].mu.Lock()
		guardedSeen = c.guardedErr(c.nodes[0]) != nil
		c.nodes[0].mu.Unlock()
	}
	require.True(t, guardedSeen, "the restart was detected")

	// Alone with the restarted node, no quorum: the error names it.
	servers[1].Pause()
	_, err := c.TryLock(ctx, "k", ttl)
	servers[1].Resume()
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrQuorumUnreachable)
	assert.ErrorIs(t, err, ErrNodeGuarded)
	assert.Contains(t, guardedNodes(err), servers[0].Addr)
	assert.Contains(t, err.Error(), "restarted")

	// After the window (ttl + drift from detection) it counts again.
	require.Eventually(t, func() bool {
		l, err := c.TryLock(ctx, "k", ttl)
		if err != nil {
			return false
		}
		defer l.Unlock(ctx)
		return contains(grantedBy(t, servers, l), servers[0].Addr)
	}, 10*time.Second, 20*time.Millisecond)
	assert.GreaterOrEqual(t, time.Since(restarted), ttl, "not before the window")
}

// A restart noticed without any failed command - the connection to the old
// process was found closed while idle, and replaced before anything was sent
// on it - starts the guard all the same: the new connection's INFO is
// checked before the command that needed it runs. (With the pipelined
// transport the per-connection check was never installed, and this first
// TryLock counted the restarted, empty node.)
func TestRestartFoundOnIdleConnection(t *testing.T) {
	ctx := context.Background()
	ttl := 10 * time.Second
	servers, c := restartedNode(t, false)
	time.Sleep(2 * idleCheckAfter) // the connection is checked before its next command
	l, err := c.TryLock(ctx, "k", ttl)
	require.NoError(t, err, "two healthy nodes of three still make a quorum")
	assert.NotContains(t, grantedBy(t, servers, l), servers[0].Addr, "a restarted node must not count during its guard")
	c.nodes[0].mu.Lock()
	guarded := c.guardedErr(c.nodes[0])
	c.nodes[0].mu.Unlock()
	require.ErrorIs(t, guarded, ErrNodeGuarded, "the restart was detected by the first operation")
	require.NoError(t, l.Unlock(ctx))
}

// A fan-out that checked a node just before another operation found it
// restarted (on a new connection, whose INFO started the guard) must not
// send on that new connection: it takes the connection before it checks the
// node. Node 1 refuses, so only a guarded node 0 could make the quorum.
func TestGuardStartedWhileLaunching(t *testing.T) {
	_, c := restartedNode(t, true)
	ctx := context.Background()
	time.Sleep(2 * idleCheckAfter)

	var once sync.Once
	blocked, release := make(chan struct{}), make(chan struct{})
	testHookLaunch = func(i int) {
		first := false
		if i == 0 {
			once.Do(func() { first = true })
		}
		if first {
			close(blocked)
			<-release
		}
	}
	defer func() { testHookLaunch = nil }()
	done := make(chan error, 1)
	go func() {
		_, err := c.TryLock(ctx, "k", 10*time.Second)
		done <- err
	}()
	<-blocked // the attempt on "k" holds node 0's connection, not yet checked
	// Meanwhile another operation finds the restart and dials anew.
	other, err := c.TryLock(ctx, "other", 10*time.Second)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		c.nodes[0].mu.Lock()
		defer c.nodes[0].mu.Unlock()
		return c.guardedErr(c.nodes[0]) != nil
	}, 5*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool {
		p := c.nodes[0].t.(*pipeTransport).live()
		return p != nil && p.alive()
	}, 5*time.Second, time.Millisecond)
	close(release)
	err = <-done
	require.NoError(t, other.Unlock(ctx))
	require.Error(t, err, "a quorum counting the guarded node 0")
	assert.ErrorIs(t, err, ErrNotObtained)
}

// An operation that passed the node check and then had to dial (its
// connection was gone without a failure the Client saw) checks the node
// again once it holds the new connection: that connection's INFO revealed
// the restart, so the script is not sent. Node 1 refuses, so only a guarded
// node 0 could make the quorum.
func TestGuardCheckedAfterDial(t *testing.T) {
	for _, piped := range []bool{true, false} {
		t.Run(fmt.Sprintf("pipelining=%v", piped), func(t *testing.T) {
			servers, c := restartedNode(t, true, WithPipelining(piped))
			ctx := context.Background()
			// Drop node 0's connection behind the Client's back: no failed
			// command, so no re-check is pending.
			if piped {
				c.nodes[0].t.(*pipeTransport).live().fail(errors.New("dropped by the test"))
			} else {
				conn := c.nodes[0].t.(*poolTransport).owned.Get()
				_, err := conn.Do("PING")
				require.Error(t, err, "the pooled connection to the old process")
				conn.Close()
			}
			_, err := c.TryLock(ctx, "k", 10*time.Second)
			require.Error(t, err, "a quorum counting the restarted node 0")
			assert.ErrorIs(t, err, ErrNodeGuarded)
			v, _ := holder(t, servers[0], "k")
			assert.Empty(t, v, "the script ran on the restarted node")
		})
	}
}

// A call the caller cancels says nothing about the node: it does not mark
// the node for a restart check (which would send its next commands down the
// blocking path, out of order with those already queued). A call that
// outlives the per-node timeout does.
func TestCallerCancelDoesNotSuspectNode(t *testing.T) {
	servers, c := cluster(t, 1)
	warm(t, c)
	n := c.nodes[0]
	one := newScript(0, "return 1")
	suspected := func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.g.recheck
	}
	for _, cancelled := range []bool{true, false} {
		do(t, servers[0], "CLIENT", "PAUSE", 300, "ALL")
		base := context.WithValue(context.Background(), nodeTimeoutKey{}, 5*time.Second)
		ctx, cancel := context.WithTimeout(base, 50*time.Millisecond)
		if cancelled {
			ctx, cancel = context.WithCancel(base)
			time.AfterFunc(50*time.Millisecond, cancel)
		}
		_, err := c.eval(ctx, n, one)
		cancel()
		if cancelled {
			require.ErrorIs(t, err, context.Canceled)
			assert.False(t, suspected(), "a cancelled call marked the node")
		} else {
			require.ErrorIs(t, err, context.DeadlineExceeded)
			assert.True(t, suspected(), "a timed-out call did not mark the node")
		}
		time.Sleep(300 * time.Millisecond) // the pause ends
	}
}

// A pipelined connection that fails marks its node for a restart check
// even when nobody waits for the failed command's outcome any more: here
// its caller cancelled (which by itself marks nothing), then the node
// dropped the connection.
func TestFailedConnectionMarksNode(t *testing.T) {
	servers, c := cluster(t, 1, WithNodeTimeout(5*time.Second))
	warm(t, c)
	n := c.nodes[0]
	suspected := func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.g.recheck
	}
	do(t, servers[0], "CLIENT", "PAUSE", 1000, "WRITE")
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), nodeTimeoutKey{}, 5*time.Second))
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := c.eval(ctx, n, newScript(1, "return redis.call('SET', KEYS[1], 'x')"), "k")
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, suspected(), "the cancellation marked the node")
	do(t, servers[0], "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
	assert.Eventually(t, suspected, 2*time.Second, time.Millisecond, "the failed connection did not mark the node")
}

func TestRestartGuardOff(t *testing.T) {
	servers, c := cluster(t, 3, WithoutRestartGuard())
	ctx := context.Background()
	l, err := c.TryLock(ctx, "k", time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Unlock(ctx))
	require.NoError(t, servers[0].Restart())
	servers[1].Pause()
	defer servers[1].Resume()
	// Within a couple of attempts (a dead pooled connection fails first) the
	// restarted node counts at once.
	var got bool
	for i := 0; i < 20 && !got; i++ {
		l, err := c.TryLock(ctx, "k", time.Second)
		if err == nil {
			got = true
			require.NoError(t, l.Unlock(ctx))
			continue
		}
		assert.NotErrorIs(t, err, ErrNodeGuarded)
	}
	assert.True(t, got)
}

// TestRestartGuardUserPool covers pools given to New, whose dials the Client
// cannot see: a connection-level failure triggers the run_id check.
func TestRestartGuardUserPool(t *testing.T) {
	servers := redistest.Start(t, 3)
	pools := make([]Pool, len(servers))
	for i, s := range servers {
		addr := s.Addr
		p := &redis.Pool{MaxIdle: 4, DialContext: func(ctx context.Context) (redis.Conn, error) {
			return redis.DialContext(ctx, "tcp", addr)
		}}
		t.Cleanup(func() { p.Close() })
		pools[i] = p
	}
	c, err := New(pools)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, c.Close()) })
	ctx := context.Background()
	l, err := c.TryLock(ctx, "k", time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Unlock(ctx))

	require.NoError(t, servers[0].Restart())
	var guarded bool
	for i := 0; i < 20 && !guarded; i++ {
		l, err := c.TryLock(ctx, "k", time.Second)
		require.NoError(t, err)
		require.NoError(t, l.Unlock(ctx))
		c.nodes[0].mu.Lock()
		guarded = c.guardedErr(c.nodes[0]) != nil
		c.nodes[0].mu.Unlock()
	}
	assert.True(t, guarded)
}

func TestStrictRestartGuardWaitsOnYoungNodes(t *testing.T) {
	servers := redistest.Start(t, 3)
	window := 1500 * time.Millisecond
	c := dial(t, servers, WithStrictRestartGuard(), WithRestartGuard(window))
	ctx := context.Background()
	start := time.Now()
	_, err := c.TryLock(ctx, "k", time.Second)
	require.Error(t, err, "every node is younger than the window")
	assert.ErrorIs(t, err, ErrQuorumUnreachable)
	assert.GreaterOrEqual(t, len(guardedNodes(err)), 2, "TryLock stops once the quorum is impossible")
	assert.Contains(t, err.Error(), "strict")

	lctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	l, err := c.Lock(lctx, "k", time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Unlock(ctx))
	assert.GreaterOrEqual(t, time.Since(start), window-time.Second, "uptime is in whole seconds")
}

func TestDurableNodesExempt(t *testing.T) {
	dir := t.TempDir()
	durable, err := redistest.NewServer("--appendonly", "yes", "--appendfsync", "always", "--dir", dir)
	require.NoError(t, err)
	t.Cleanup(durable.Close)
	noConfig, err := redistest.NewServer("--appendonly", "yes", "--appendfsync", "always", "--dir", t.TempDir(), "--rename-command", "CONFIG", "")
	require.NoError(t, err)
	t.Cleanup(noConfig.Close)
	plain := redistest.Start(t, 1)[0]
	servers := []*redistest.Server{durable, noConfig, plain}
	c := dial(t, servers, WithDurableNodesExempt(), WithStrictRestartGuard(), WithRestartGuard(time.Hour))
	_, err = c.TryLock(context.Background(), "k", time.Second)
	require.Error(t, err)
	// Every node has had first contact once the background release ended.
	require.NoError(t, c.Close())
	guarded := func(i int) bool {
		c.nodes[i].mu.Lock()
		defer c.nodes[i].mu.Unlock()
		return c.guardedErr(c.nodes[i]) != nil
	}
	assert.False(t, guarded(0), "appendfsync always is exempt")
	assert.True(t, guarded(1), "CONFIG forbidden: not exempt")
	assert.True(t, guarded(2))
}

func TestRestartGuardOptions(t *testing.T) {
	_, err := Dial([]string{"127.0.0.1:1"}, WithRestartGuard(-time.Second))
	assert.ErrorContains(t, err, "WithRestartGuard")
	c, err := Dial([]string{"127.0.0.1:1"}, WithoutRestartGuard(), WithRestartGuard(time.Second))
	require.NoError(t, err)
	assert.Equal(t, guardOn, c.cfg.guard, "setting a window turns the guard back on")
	assert.Equal(t, time.Second, c.guardWindow())
	require.NoError(t, c.Close())

	c, err = Dial([]string{"127.0.0.1:1"})
	require.NoError(t, err)
	assert.Zero(t, c.guardWindow(), "no TTL used yet")
	c.noteTTL(2 * time.Second)
	c.noteTTL(time.Second)
	assert.Equal(t, 2*time.Second+drift(2*time.Second, DefaultDriftFactor), c.guardWindow())
	require.NoError(t, c.Close())
}

func TestParseInfoUptime(t *testing.T) {
	si := parseInfo("# Server\r\nrun_id:abc\r\nuptime_in_seconds:42\r\n# Replication\r\nrole:master\r\n")
	assert.Equal(t, "abc", si.runID)
	assert.Equal(t, "master", si.role)
	assert.Equal(t, 42*time.Second, si.uptime)
	assert.Equal(t, time.Duration(-1), parseInfo("run_id:x\r\n").uptime, "absent")
	assert.Equal(t, time.Duration(-1), parseInfo("uptime_in_seconds:-3\r\n").uptime, "garbage")
}
