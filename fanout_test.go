package redlock

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redlockgo/redlock/internal/redistest"
)

// keyGone waits until no node holds key. If one still does, it fails the
// test naming each holder's value and remaining TTL, which tells a release
// that did not land (the test's token, its TTL) from a key another client
// set.
func keyGone(t *testing.T, servers []*redistest.Server, key string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var left []string
		for _, s := range servers {
			if v, pttl := holder(t, s, key); v != "" {
				left = append(left, fmt.Sprintf("%s holds %q (pttl %d ms)", s.Addr, v, pttl))
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q left on a node after %v: %s", key, within, strings.Join(left, "; "))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// warm makes first contact with every node and brings up the pipelined
// connections, so that the fan-outs that follow take the queued path.
func warm(t *testing.T, c *Client) {
	t.Helper()
	ctx := context.Background()
	l, err := c.TryLock(ctx, "warm", time.Second)
	require.NoError(t, err)
	l.acq.waitAll()
	require.NoError(t, l.Unlock(ctx))
}

// Commands waiting on a paused node cost no goroutine: the fan-out queues
// them on the node's connection and its reader delivers the outcome. (The
// blocking path spent one goroutine per node and round, here 2 paused nodes
// × 2 rounds × 20 cycles = 80.)
func TestFanoutQueuesWithoutGoroutines(t *testing.T) {
	servers, c := cluster(t, 5, WithNodeTimeout(10*time.Second))
	warm(t, c)
	ctx := context.Background()
	before := runtime.NumGoroutine()
	servers[3].Pause()
	servers[4].Pause()
	defer servers[3].Resume()
	defer servers[4].Resume()
	for i := 0; i < 20; i++ {
		l, err := c.TryLock(ctx, fmt.Sprint("k", i), 20*time.Second)
		require.NoError(t, err)
		require.NoError(t, l.Unlock(ctx))
	}
	during := runtime.NumGoroutine()
	assert.Less(t, during-before, 20, "goroutines grew from %d to %d with 80 commands pending", before, during)
	servers[3].Resume()
	servers[4].Resume()
	// The releases went out behind their acquires on the paused nodes'
	// connections: once the nodes run again, no key is left.
	for i := 0; i < 20; i++ {
		keyGone(t, servers, fmt.Sprint("k", i), 5*time.Second)
	}
}

// A release queued behind an acquire still in flight on the same node is
// sent only after that acquire's reply, and so lands after it: a node
// paused by CLIENT PAUSE (which holds the commands and then runs them in
// order) ends up without the key.
func TestReleaseFollowsAcquireInFlight(t *testing.T) {
	servers, c := cluster(t, 5, WithNodeTimeout(5*time.Second))
	warm(t, c)
	ctx := context.Background()
	_, err := servers[4].Do("CLIENT", "PAUSE", 1000, "ALL")
	require.NoError(t, err)
	start := time.Now()
	l, err := c.TryLock(ctx, "k", 20*time.Second)
	require.NoError(t, err)
	require.False(t, l.acq.isDone(4), "the paused node answered")
	require.NoError(t, l.Unlock(ctx))
	assert.Less(t, time.Since(start), 500*time.Millisecond, "TryLock and Unlock waited for the paused node")
	keyGone(t, servers, "k", 5*time.Second)
}

// A connection that dies between an acquire and its release: the acquire
// fails as outcome unknown, and the release, finding no live connection,
// takes the blocking path, which checks the node for a restart and dials a
// new connection. (CLIENT PAUSE WRITE holds the acquire in the server while
// CLIENT KILL closes the connection.)
func TestReleaseAfterConnectionDied(t *testing.T) {
	servers, c, l := lockWithHeldAcquire(t)
	ctx := context.Background()
	_, err := servers[4].Do("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
	require.NoError(t, err)
	l.acq.wait(4)
	require.Equal(t, voteFail, l.acq.results[4].vote)
	require.NoError(t, l.Unlock(ctx))
	keyGone(t, servers, "k", 5*time.Second)
	assert.True(t, c.nodes[4].t.(*pipeTransport).live().alive(), "no new connection")
}

// tryLockCancelled runs TryLock of "k" under a context cancelled after
// 50 ms, checks that it failed with the context's error, and returns how
// long TryLock took and its error.
func tryLockCancelled(t *testing.T, c *Client) (time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err := c.TryLock(ctx, "k", 20*time.Second)
	took := time.Since(start)
	require.ErrorIs(t, err, ErrNotObtained)
	require.ErrorIs(t, err, context.Canceled)
	return took, err
}

// The caller's context ending while nodes do not answer ends the attempt at
// once, with the context's error; the commands left queued on the paused
// nodes are followed by their releases, so no key is left once they run.
func TestCancelWhileNodesPaused(t *testing.T) {
	servers, c := cluster(t, 3, WithNodeTimeout(10*time.Second))
	warm(t, c)
	servers[1].Pause()
	servers[2].Pause()
	defer servers[1].Resume()
	defer servers[2].Resume()
	took, err := tryLockCancelled(t, c)
	assert.NotErrorIs(t, err, ErrNodeTimeout)
	assert.Less(t, took, 2*time.Second, "the attempt waited for the paused nodes")
	servers[1].Resume()
	servers[2].Resume()
	keyGone(t, servers, "k", 5*time.Second)
}

// A context that has already ended sends nothing.
func TestCancelledBeforeStart(t *testing.T) {
	servers, c := cluster(t, 3)
	warm(t, c)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.TryLock(ctx, "k", time.Second)
	require.ErrorIs(t, err, ErrNotObtained)
	require.ErrorIs(t, err, context.Canceled)
	for _, s := range servers {
		n, err := redis.Int(s.Do("EXISTS", "k"))
		require.NoError(t, err)
		assert.Zero(t, n)
	}
}

// A node still in first contact when Lock wins the lock on the others gets
// the lock too, even though the caller's context ends as Lock returns (the
// idiomatic deferred cancel): the lock is held on every node that answers in
// time, not only on the first quorum. redlock exec ends the wait's context
// right after Lock returns and used to leave the slowest node without it.
func TestFirstContactGoesOnAfterLockReturns(t *testing.T) {
	servers, proxies, c := proxied(t, 3, WithNodeTimeout(3*time.Second))
	proxies[2].Delay(100 * time.Millisecond) // first contact: several round trips of 200 ms
	ctx, cancel := context.WithCancel(context.Background())
	l, err := c.Lock(ctx, "k", 30*time.Second)
	cancel()
	require.NoError(t, err)
	v, _ := holder(t, servers[2], "k")
	require.Empty(t, v, "the slow node is still in first contact when Lock returns")
	assert.Eventually(t, func() bool { v, _ := holder(t, servers[2], "k"); return v == l.Token() },
		10*time.Second, 5*time.Millisecond, "the slow node never got the lock")
	require.NoError(t, l.Unlock(context.Background()))
	keyGone(t, servers, "k", 5*time.Second)
}

// Likewise for Extend: a node that got the lock late (its first contact was
// slow) is extended too, although the caller's context ends as Extend
// returns; otherwise it would drop the key at the original TTL and the lock
// would be back on the first quorum alone.
func TestExtendGoesOnAfterReturn(t *testing.T) {
	servers, proxies, c := proxied(t, 3, WithNodeTimeout(3*time.Second))
	proxies[2].Delay(100 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	l, err := c.Lock(ctx, "k", 8*time.Second)
	cancel()
	require.NoError(t, err)
	ctx2, cancel2 := context.WithCancel(context.Background())
	require.NoError(t, l.Extend(ctx2, time.Minute))
	cancel2()
	assert.Eventually(t, func() bool {
		v, pttl := holder(t, servers[2], "k")
		return v == l.Token() && pttl > 30_000
	}, 10*time.Second, 5*time.Millisecond, "the slow node was not extended")
	require.NoError(t, l.Unlock(context.Background()))
	keyGone(t, servers, "k", 5*time.Second)
}

// Before the decision, the caller's context ending stops nodes in first
// contact at once: the attempt does not wait for them.
func TestCancelDuringFirstContact(t *testing.T) {
	servers, proxies, c := proxied(t, 3, WithNodeTimeout(10*time.Second))
	proxies[1].Delay(time.Second)
	proxies[2].Delay(time.Second)
	took, _ := tryLockCancelled(t, c)
	assert.Less(t, took, time.Second, "the attempt waited for nodes in first contact")
	proxies[1].Heal()
	proxies[2].Heal()
	keyGone(t, servers, "k", 5*time.Second)
}

// TestAllocsPerCycle pins the allocations of one TryLock+Unlock cycle on 5
// nodes (measured: 37; the hand-written redigo fan-out in bench/ makes 79,
// and the target is at most 1.2 times that). Allocations of the
// connections' reader goroutines are counted too.
func TestAllocsPerCycle(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	// Generous timeouts: on a loaded machine a timed-out node would take
	// the error paths, which allocate more.
	_, c := cluster(t, 5, WithNodeTimeout(5*time.Second))
	warm(t, c)
	ctx := context.Background()
	var failed error
	allocs := testing.AllocsPerRun(200, func() {
		l, err := c.TryLock(ctx, "k", 30*time.Second)
		if err == nil {
			err = l.Unlock(ctx)
		}
		if err != nil && failed == nil {
			failed = err
		}
	})
	require.NoError(t, failed)
	t.Logf("%.1f allocations per cycle", allocs)
	assert.LessOrEqual(t, allocs, 60.0)
}

// A release queued behind an acquire on a node whose scripts were flushed:
// the acquire's EVALSHA fails with NOSCRIPT, and the release behind it
// (its script still loaded) has run and found no key. The acquire is not
// sent again (it would run after its release and leave the key behind): it
// fails, known not to have run.
func TestQueuedReleaseAfterNoScript(t *testing.T) {
	servers, c := cluster(t, 5, WithNodeTimeout(5*time.Second))
	warm(t, c)
	ctx := context.Background()
	s := servers[4]
	_, err := s.Do("SCRIPT", "FLUSH")
	require.NoError(t, err)
	_, err = s.Do("SCRIPT", "LOAD", releaseSrc)
	require.NoError(t, err)
	_, err = s.Do("CLIENT", "PAUSE", 1000, "ALL")
	require.NoError(t, err)
	l, err := c.TryLock(ctx, "k", 20*time.Second)
	require.NoError(t, err)
	require.False(t, l.acq.isDone(4), "the paused node answered")
	require.NoError(t, l.Unlock(ctx))
	l.acq.wait(4)
	r := l.acq.results[4]
	require.Equal(t, voteFail, r.vote)
	require.ErrorContains(t, r.err, "NOSCRIPT")
	keyGone(t, servers, "k", 5*time.Second)
}

// A release queued behind an acquire whose connection dies: once the
// acquire's failure is in, the release goes again on a new connection
// instead of failing with the old one.
func TestQueuedReleaseAfterConnectionDied(t *testing.T) {
	servers, c, l := lockWithHeldAcquire(t)
	ctx := context.Background()
	rel := c.release(ctx, l.acq, l.name, l.token, "", nil, 5*time.Second)
	_, err := servers[4].Do("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
	require.NoError(t, err)
	rel.wait(4)
	assert.Equal(t, voteFail, l.acq.results[4].vote)
	// The killed client's acquire never ran: the release, sent again
	// after the pause, finds no key.
	assert.Equal(t, voteNo, rel.results[4].vote, "release: %v", rel.results[4].err)
	rel.waitAll()
	keyGone(t, servers, "k", time.Second)
}

// lockWithHeldAcquire takes "k" on 5 nodes while node 4 holds its acquire
// unanswered (CLIENT PAUSE WRITE for a second), for tests that then break
// that node's connection.
func lockWithHeldAcquire(t *testing.T) ([]*redistest.Server, *Client, *Lock) {
	t.Helper()
	servers, c := cluster(t, 5, WithNodeTimeout(5*time.Second))
	warm(t, c)
	_, err := servers[4].Do("CLIENT", "PAUSE", 1000, "WRITE")
	require.NoError(t, err)
	l, err := c.TryLock(context.Background(), "k", 20*time.Second)
	require.NoError(t, err)
	require.False(t, l.acq.isDone(4), "the paused node answered")
	return servers, c, l
}
