package redlock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/hashicorp/go-multierror"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redlockgo/redlock/internal/redistest"
)

// cluster starts n real servers and returns them with a Client dialled to
// them; both are cleaned up with the test.
func cluster(t *testing.T, n int, opts ...Option) ([]*redistest.Server, *Client) {
	t.Helper()
	servers := redistest.Start(t, n)
	return servers, dial(t, servers, opts...)
}

func dial(t *testing.T, servers []*redistest.Server, opts ...Option) *Client {
	t.Helper()
	c, err := Dial(redistest.Addrs(servers), opts...)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, c.Close()) })
	return c
}

// holder returns the value of key on s ("" if absent) and its PTTL in ms.
func holder(t *testing.T, s *redistest.Server, key string) (string, int64) {
	t.Helper()
	c, err := s.Conn()
	require.NoError(t, err, "node %s", s.Addr)
	defer c.Close()
	v, err := redis.String(c.Do("GET", key))
	if errors.Is(err, redis.ErrNil) {
		return "", -2
	}
	require.NoError(t, err)
	pttl, err := redis.Int64(c.Do("PTTL", key))
	require.NoError(t, err)
	return v, pttl
}

func TestTryLockUnlock(t *testing.T) {
	servers, c := cluster(t, 5)
	ctx := context.Background()

	before := time.Now()
	l, err := c.TryLock(ctx, "k", 10*time.Second)
	require.NoError(t, err)
	assert.Equal(t, "k", l.Key())
	assert.Len(t, l.Token(), 40, "160-bit hex token")
	// Until = start + ttl - drift, start taken after `before`.
	assert.False(t, l.Until().Before(before.Add(10*time.Second-102*time.Millisecond)))
	assert.True(t, l.Until().Before(time.Now().Add(10*time.Second)))

	granted := 0
	for _, s := range servers {
		if v, pttl := holder(t, s, "k"); v == l.Token() {
			granted++
			assert.InDelta(t, 10000, pttl, 500)
		}
	}
	assert.GreaterOrEqual(t, granted, 3)

	require.NoError(t, l.Unlock(ctx))
	// Unlock returns after a quorum; stragglers finish within their timeouts.
	require.Eventually(t, func() bool {
		for _, s := range servers {
			if v, _ := holder(t, s, "k"); v != "" {
				return false
			}
		}
		return true
	}, 2*time.Second, 5*time.Millisecond)

	err = l.Unlock(ctx)
	assert.ErrorIs(t, err, ErrLockLost, "second Unlock: a quorum answered the key is absent")
	assert.ErrorIs(t, l.Extend(ctx, time.Second), ErrLockLost)
}

// heldEverywhere waits until every node holds key with token: TryLock
// returns once a quorum granted, the other nodes follow within a round trip.
func heldEverywhere(t *testing.T, servers []*redistest.Server, key, token string) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, s := range servers {
			if v, _ := holder(t, s, key); v != token {
				return false
			}
		}
		return true
	}, 2*time.Second, 2*time.Millisecond, "every node holds the lock")
}

// dropEverywhere deletes l's key on every node, as a node that lost its data
// would, once the acquire's stragglers have landed (or they would set the key
// again after the delete).
func dropEverywhere(t *testing.T, servers []*redistest.Server, l *Lock) {
	t.Helper()
	l.acq.waitAll()
	for _, s := range servers {
		_, err := s.Do("DEL", l.name)
		require.NoError(t, err)
	}
}

func TestTokensAreUnique(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		tok, err := newToken()
		require.NoError(t, err)
		require.False(t, seen[tok])
		seen[tok] = true
	}
}

func TestContendedTryLockLeavesNothing(t *testing.T) {
	servers, c := cluster(t, 5)
	other := dial(t, servers)
	ctx := context.Background()

	a, err := c.TryLock(ctx, "k", 10*time.Second)
	require.NoError(t, err)
	heldEverywhere(t, servers, "k", a.Token())
	_, err = other.TryLock(ctx, "k", 10*time.Second)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrNotObtained)
	assert.NotErrorIs(t, err, ErrQuorumUnreachable)
	assert.NotErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), "held by another")
	for _, s := range servers {
		v, _ := holder(t, s, "k")
		assert.Equal(t, a.Token(), v, "the holder's key is untouched on %s", s.Addr)
	}
	require.NoError(t, a.Unlock(ctx))
}

// faultMode is how a node is made unavailable to an acquisition.
type faultMode int

const (
	up      faultMode = iota
	killed            // SIGKILL: connection refused
	paused            // SIGSTOP: accepts TCP, never answers
	foreign           // the key is held by another owner
)

func (m faultMode) String() string {
	return [...]string{"up", "killed", "paused", "foreign"}[m]
}

// runFaultCase applies modes to the nodes, makes one TryLock and checks that
// it is granted iff a quorum is available, the kind of error otherwise, and
// that no key of ours remains on any node that answered.
func runFaultCase(t *testing.T, servers []*redistest.Server, modes []faultMode) {
	t.Helper()
	const key, ttl = "subset", 5 * time.Second
	available := 0
	for i, m := range modes {
		switch m {
		case up:
			available++
		case killed:
			servers[i].Kill()
		case paused:
			servers[i].Pause()
		case foreign:
			_, err := servers[i].Do("SET", key, "foreign", "PX", 60000)
			require.NoError(t, err)
		}
	}
	defer func() {
		for i, m := range modes {
			switch m {
			case killed:
				require.NoError(t, servers[i].Restart())
			case paused:
				servers[i].Resume()
			}
			_, err := servers[i].Do("DEL", key)
			require.NoError(t, err)
		}
	}()

	c, err := Dial(redistest.Addrs(servers), WithNodeTimeout(150*time.Millisecond))
	require.NoError(t, err)
	defer func() { require.NoError(t, c.Close()) }()

	l, err := c.TryLock(context.Background(), key, ttl)
	if available >= quorum(len(servers)) {
		require.NoError(t, err, "modes %v", modes)
		require.NoError(t, l.Unlock(context.Background()))
		return
	}
	require.Error(t, err, "modes %v", modes)
	assert.ErrorIs(t, err, ErrNotObtained)
	failed, refused := map[string]bool{}, 0
	for i, m := range modes {
		switch m {
		case killed, paused:
			failed[servers[i].Addr] = true
		case foreign:
			refused++
		}
	}
	canFail := len(failed) > len(servers)-quorum(len(servers))
	switch {
	case canFail && refused == 0:
		assert.ErrorIs(t, err, ErrQuorumUnreachable, "modes %v", modes)
	case !canFail:
		assert.NotErrorIs(t, err, ErrQuorumUnreachable, "modes %v", modes)
	} // else the decision may fall before every failure is known: either is right
	// Every node named in a NodeError really failed; with only failures, all of
	// those the decision waited for are named.
	named := map[string]bool{}
	for _, e := range unwrapAll(err) {
		if ne, ok := e.(*NodeError); ok {
			named[ne.Addr] = true
			assert.True(t, failed[ne.Addr], "node %s named as failed, modes %v", ne.Addr, modes)
		}
	}
	if refused == 0 && canFail {
		assert.Greater(t, len(named), len(servers)-quorum(len(servers)), "modes %v: %v", modes, err)
	}
	// No key of ours remains on any node that answered: released, not left
	// to expire (the TTL is 5 s; a node that answered after TryLock returned
	// is released in the background at once).
	for i, m := range modes {
		switch m {
		case up:
			assert.Eventually(t, func() bool { v, _ := holder(t, servers[i], key); return v == "" },
				time.Second, 2*time.Millisecond, "node %d (%v) after a miss, modes %v", i, m, modes)
		case foreign:
			v, _ := holder(t, servers[i], key)
			assert.Equal(t, "foreign", v, "node %d: the foreign holder must be untouched", i)
		}
	}
}

// TestEverySubsetDown takes every subset of 5 nodes down, in each way, and
// checks that a lock is granted iff a quorum is available.
func TestEverySubsetDown(t *testing.T) {
	servers := redistest.Start(t, 5)
	for _, mode := range []faultMode{killed, paused, foreign} {
		for mask := 0; mask < 1<<len(servers); mask++ {
			modes := make([]faultMode, len(servers))
			for i := range modes {
				if mask&(1<<i) != 0 {
					modes[i] = mode
				}
			}
			t.Run(fmt.Sprintf("%v/%05b", mode, mask), func(t *testing.T) {
				runFaultCase(t, servers, modes)
			})
		}
	}
}

// TestMixedFaults mixes the fault kinds across nodes (seeded).
func TestMixedFaults(t *testing.T) {
	servers := redistest.Start(t, 5)
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	for i := 0; i < 40; i++ {
		modes := make([]faultMode, len(servers))
		for j := range modes {
			modes[j] = faultMode(rng.IntN(4))
		}
		t.Run(fmt.Sprint(modes), func(t *testing.T) { runFaultCase(t, servers, modes) })
	}
}

// TestPausedNodeCostsOneRoundTrip: a SIGSTOPped node must not make TryLock
// wait for the per-node timeout when a quorum answers without it.
func TestPausedNodeCostsOneRoundTrip(t *testing.T) {
	servers, c := cluster(t, 5, WithNodeTimeout(3*time.Second))
	ctx := context.Background()
	// First contact (INFO) with every node before the fault.
	l, err := c.TryLock(ctx, "warm", time.Minute)
	require.NoError(t, err)
	require.NoError(t, l.Unlock(ctx))

	servers[2].Pause()
	defer servers[2].Resume()
	for i := 0; i < 5; i++ {
		start := time.Now()
		l, err := c.TryLock(ctx, fmt.Sprint("k", i), time.Minute)
		took := time.Since(start)
		require.NoError(t, err)
		// Measured: about 1 ms on loopback. 3 s would mean we waited for the timeout.
		assert.Less(t, took, 300*time.Millisecond, "TryLock with one paused node")
		start = time.Now()
		require.NoError(t, l.Unlock(ctx))
		assert.Less(t, time.Since(start), 300*time.Millisecond, "Unlock with one paused node")
	}
	servers[2].Resume() // let the stragglers finish before Close waits for them
}

func TestUnlockWithCancelledContext(t *testing.T) {
	servers, c := cluster(t, 5)
	ctx, cancel := context.WithCancel(context.Background())
	l, err := c.TryLock(ctx, "k", 10*time.Second)
	require.NoError(t, err)
	cancel()
	require.NoError(t, l.Unlock(ctx), "Unlock must run under its own timeout")
	require.Eventually(t, func() bool {
		for _, s := range servers {
			if v, _ := holder(t, s, "k"); v != "" {
				return false
			}
		}
		return true
	}, 2*time.Second, 5*time.Millisecond)
}

// A miss must be cleaned up even when the caller's context ends during it.
func TestMissCleanupSurvivesCancellation(t *testing.T) {
	servers, c := cluster(t, 5, WithNodeTimeout(2*time.Second))
	ctx := context.Background()
	_, err := c.TryLock(ctx, "warm", time.Second) // first contact
	require.NoError(t, err)
	// Two foreign holders and one paused node: our attempt gets two yes
	// votes and must wait on the paused node until the caller gives up.
	for _, s := range servers[:2] {
		_, err := s.Do("SET", "k", "foreign", "PX", 60000)
		require.NoError(t, err)
	}
	servers[2].Pause()
	defer servers[2].Resume()
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err = c.TryLock(cctx, "k", 10*time.Second)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrNotObtained)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, ErrQuorumUnreachable, "a cancellation is not an outage")
	for _, s := range servers[3:] {
		v, _ := holder(t, s, "k")
		assert.Equal(t, "", v, "granted node %s released despite the cancelled context", s.Addr)
	}
	servers[2].Resume()
}

func TestCancellation(t *testing.T) {
	servers, c := cluster(t, 5)
	ctx := context.Background()

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err := c.TryLock(cancelled, "k", time.Second)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrNotObtained)
	assert.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, ErrQuorumUnreachable)
	for _, s := range servers {
		v, _ := holder(t, s, "k")
		assert.Equal(t, "", v)
	}

	held, err := c.TryLock(ctx, "k", 10*time.Second)
	require.NoError(t, err)
	wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer wcancel()
	start := time.Now()
	_, err = c.Lock(wctx, "k", time.Second)
	took := time.Since(start)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrNotObtained)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.GreaterOrEqual(t, took, 200*time.Millisecond)
	assert.Less(t, took, time.Second, "Lock must return promptly when ctx ends")
	require.NoError(t, held.Unlock(ctx))
}

func TestLockWaitsForRelease(t *testing.T) {
	_, c := cluster(t, 5)
	ctx := context.Background()
	held, err := c.TryLock(ctx, "k", 10*time.Second)
	require.NoError(t, err)
	time.AfterFunc(150*time.Millisecond, func() { held.Unlock(ctx) })
	start := time.Now()
	l, err := c.Lock(ctx, "k", 10*time.Second)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond)
	require.NoError(t, l.Unlock(ctx))
}

func TestLockAfterHolderCrash(t *testing.T) {
	servers, c := cluster(t, 3)
	ctx := context.Background()
	crashed := dial(t, servers)
	_, err := crashed.TryLock(ctx, "k", 300*time.Millisecond) // never unlocked
	require.NoError(t, err)
	start := time.Now()
	l, err := c.Lock(ctx, "k", time.Second)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, time.Since(start), 250*time.Millisecond)
	require.NoError(t, l.Unlock(ctx))
}

func TestExtend(t *testing.T) {
	servers, c := cluster(t, 5)
	ctx := context.Background()
	l, err := c.TryLock(ctx, "k", 2*time.Second)
	require.NoError(t, err)

	before := l.Until()
	require.NoError(t, l.Extend(ctx, 20*time.Second))
	assert.True(t, l.Until().After(before.Add(17*time.Second)))
	extended := func() (n int) {
		for _, s := range servers {
			if v, pttl := holder(t, s, "k"); v == l.Token() && pttl > 19000 {
				n++
			}
		}
		return n
	}
	// Extend returns once a quorum has extended; the rest follow.
	assert.GreaterOrEqual(t, extended(), quorum(len(servers)))
	require.Eventually(t, func() bool { return extended() == len(servers) }, time.Second, 5*time.Millisecond)

	// A shorter extension never shortens a node's TTL nor Until.
	until := l.Until()
	require.NoError(t, l.Extend(ctx, 500*time.Millisecond))
	assert.Equal(t, until, l.Until())
	for _, s := range servers {
		if v, pttl := holder(t, s, "k"); v == l.Token() {
			assert.Greater(t, pttl, int64(18000), "not shortened on %s", s.Addr)
		}
	}
	require.NoError(t, l.Unlock(ctx))
}

// TestPartialExtendNeverShortens: an Extend that reaches only a minority
// fails with ErrQuorumUnreachable, leaves Until unchanged and shortens no
// node's TTL.
func TestPartialExtendNeverShortens(t *testing.T) {
	servers, c := cluster(t, 5, WithNodeTimeout(200*time.Millisecond))
	ctx := context.Background()
	l, err := c.TryLock(ctx, "k", 10*time.Second)
	require.NoError(t, err)
	until := l.Until()
	for _, s := range servers[:3] {
		s.Kill()
	}
	for _, ttl := range []time.Duration{time.Second, 30 * time.Second} {
		err = l.Extend(ctx, ttl)
		require.Error(t, err)
		assert.ErrorIs(t, err, ErrQuorumUnreachable)
		assert.NotErrorIs(t, err, ErrLockLost)
		var ne *NodeError
		assert.ErrorAs(t, err, &ne)
		assert.Equal(t, until, l.Until(), "a failed Extend leaves Until unchanged")
		for _, s := range servers[3:] {
			v, pttl := holder(t, s, "k")
			assert.Equal(t, l.Token(), v)
			assert.Greater(t, pttl, int64(9000), "TTL on %s never shortened", s.Addr)
		}
	}
}

// TestExtendUnlockAfterExpiry: after the lock lapses and another client takes
// it, Extend and Unlock report ErrLockLost and never touch the new owner's key.
func TestExtendUnlockAfterExpiry(t *testing.T) {
	servers, c := cluster(t, 5)
	other := dial(t, servers)
	ctx := context.Background()

	l, err := c.TryLock(ctx, "k", 100*time.Millisecond)
	require.NoError(t, err)
	time.Sleep(150 * time.Millisecond)
	assert.ErrorIs(t, l.Extend(ctx, time.Second), ErrLockLost, "past Until, Extend is refused outright")

	next, err := other.TryLock(ctx, "k", 10*time.Second)
	require.NoError(t, err)
	heldEverywhere(t, servers, "k", next.Token())
	pttls := map[string]int64{}
	for _, s := range servers {
		v, pttl := holder(t, s, "k")
		require.Equal(t, next.Token(), v)
		pttls[s.Addr] = pttl
	}

	err = l.Unlock(ctx)
	assert.ErrorIs(t, err, ErrLockLost)
	assert.NotErrorIs(t, err, ErrQuorumUnreachable)
	assert.ErrorIs(t, l.Extend(ctx, 60*time.Second), ErrLockLost)
	for _, s := range servers {
		v, pttl := holder(t, s, "k")
		assert.Equal(t, next.Token(), v, "new owner's key on %s untouched", s.Addr)
		assert.LessOrEqual(t, pttl, pttls[s.Addr], "new owner's TTL on %s not extended", s.Addr)
	}
	require.NoError(t, next.Unlock(ctx))
}

// An Extend within validity that finds a quorum no longer holding the key
// (nodes restarted empty) reports ErrLockLost, not unreachable.
func TestExtendFindsLockGone(t *testing.T) {
	servers, c := cluster(t, 5)
	ctx := context.Background()
	l, err := c.TryLock(ctx, "k", 10*time.Second)
	require.NoError(t, err)
	dropEverywhere(t, servers, l)
	err = l.Extend(ctx, 10*time.Second)
	assert.ErrorIs(t, err, ErrLockLost)
	assert.NotErrorIs(t, err, ErrQuorumUnreachable)
	for _, s := range servers {
		v, _ := holder(t, s, "k")
		assert.Equal(t, "", v, "Extend must never re-create a lapsed key")
	}
}

func TestUnlockQuorumUnreachable(t *testing.T) {
	servers, c := cluster(t, 5, WithNodeTimeout(200*time.Millisecond))
	ctx := context.Background()
	l, err := c.TryLock(ctx, "k", 10*time.Second)
	require.NoError(t, err)
	for _, s := range servers[:3] {
		s.Kill()
	}
	err = l.Unlock(ctx)
	assert.ErrorIs(t, err, ErrQuorumUnreachable)
	assert.NotErrorIs(t, err, ErrLockLost)
	var ne *NodeError
	require.ErrorAs(t, err, &ne)
	for _, s := range servers[3:] {
		v, _ := holder(t, s, "k")
		assert.Equal(t, "", v, "reachable nodes released")
	}
}

// TestMajorityDownErrorNamesNodes: with a majority killed, TryLock fails
// quickly with ErrQuorumUnreachable and one NodeError per dead node.
func TestMajorityDownErrorNamesNodes(t *testing.T) {
	servers, c := cluster(t, 5)
	dead := map[string]bool{}
	for _, s := range servers[1:4] {
		s.Kill()
		dead[s.Addr] = true
	}
	start := time.Now()
	_, err := c.TryLock(context.Background(), "k", 10*time.Second)
	assert.Less(t, time.Since(start), time.Second)
	require.ErrorIs(t, err, ErrQuorumUnreachable)
	require.ErrorIs(t, err, ErrNotObtained)

	found := map[string]bool{}
	for _, e := range unwrapAll(err) {
		if ne, ok := e.(*NodeError); ok {
			found[ne.Addr] = true
			assert.NotErrorIs(t, ne, ErrNodeTimeout, "a refused connection is not a timeout")
		}
	}
	assert.Equal(t, dead, found)
}

// unwrapAll flattens an error tree.
func unwrapAll(err error) []error {
	out := []error{err}
	switch e := err.(type) {
	case *multierror.Error:
		for _, x := range e.Errors {
			out = append(out, unwrapAll(x)...)
		}
	case interface{ Unwrap() []error }:
		for _, x := range e.Unwrap() {
			out = append(out, unwrapAll(x)...)
		}
	case interface{ Unwrap() error }:
		if x := e.Unwrap(); x != nil {
			out = append(out, unwrapAll(x)...)
		}
	}
	return out
}

func TestPausedMajorityTimesOut(t *testing.T) {
	servers, c := cluster(t, 5, WithNodeTimeout(200*time.Millisecond))
	ctx := context.Background()
	_, err := c.TryLock(ctx, "warm", time.Second)
	require.NoError(t, err)
	for _, s := range servers[:3] {
		s.Pause()
	}
	defer func() {
		for _, s := range servers[:3] {
			s.Resume()
		}
	}()
	start := time.Now()
	_, err = c.TryLock(ctx, "k", 10*time.Second)
	took := time.Since(start)
	require.ErrorIs(t, err, ErrQuorumUnreachable)
	assert.ErrorIs(t, err, ErrNodeTimeout)
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "the caller's context did not expire")
	// Measured about 200 ms: one per-node timeout, plus the synchronous release of the two granted nodes.
	assert.GreaterOrEqual(t, took, 200*time.Millisecond)
	assert.Less(t, took, time.Second)
}

// TestMutualExclusion: contenders over two Clients never hold the same key
// at the same time within their validity.
func TestMutualExclusion(t *testing.T) {
	servers, c1 := cluster(t, 5)
	c2 := dial(t, servers)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	type interval struct {
		from, to time.Duration
		worker   int
	}
	base := time.Now()
	var (
		mu        sync.Mutex
		intervals []interval
		overruns  int
		counter   atomic.Int64 // read and written separately: only the lock makes the increment safe
	)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		c := c1
		if w%2 == 1 {
			c = c2
		}
		wg.Add(1)
		go func(w int, c *Client) {
			defer wg.Done()
			for ctx.Err() == nil {
				l, err := c.Lock(ctx, "shared", 500*time.Millisecond)
				if err != nil {
					continue
				}
				from := time.Since(base)
				v := counter.Load()
				time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
				counter.Store(v + 1)
				to := time.Since(base)
				mu.Lock()
				intervals = append(intervals, interval{from, to, w})
				if time.Now().After(l.Until()) {
					overruns++
				}
				mu.Unlock()
				l.Unlock(context.Background())
			}
		}(w, c)
	}
	wg.Wait()
	require.Greater(t, len(intervals), 20, "contenders must make progress")
	assert.Zero(t, overruns)
	assert.Equal(t, int64(len(intervals)), counter.Load(), "lost updates")
	sort.Slice(intervals, func(i, j int) bool { return intervals[i].from < intervals[j].from })
	for i := 1; i < len(intervals); i++ {
		assert.LessOrEqual(t, intervals[i-1].to, intervals[i].from, "overlap between workers %d and %d", intervals[i-1].worker, intervals[i].worker)
	}
}

// TestDuplicateServerRejected: two endpoints reaching the same server (same
// run_id) must not both count toward a quorum.
func TestDuplicateServerRejected(t *testing.T) {
	servers := redistest.Start(t, 2)
	alias := strings.Replace(servers[0].Addr, "127.0.0.1", "localhost", 1)
	c, err := Dial([]string{servers[0].Addr, alias, servers[1].Addr}, WithNodeTimeout(time.Second))
	require.NoError(t, err)
	defer c.Close()
	ctx := context.Background()

	servers[1].Kill()
	// Only one real server is up: one vote of three, not two.
	_, err = c.TryLock(ctx, "k", 10*time.Second)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrDuplicateNode)
	assert.ErrorIs(t, err, ErrQuorumUnreachable)
	assert.Eventually(t, func() bool { v, _ := holder(t, servers[0], "k"); return v == "" }, time.Second, 2*time.Millisecond)
}

func TestReplicaRejected(t *testing.T) {
	servers := redistest.Start(t, 2)
	_, err := servers[1].Do("REPLICAOF", "127.0.0.1", servers[0].Port)
	require.NoError(t, err)
	c := dial(t, servers)
	_, err = c.TryLock(context.Background(), "k", 10*time.Second)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrNotMaster)
	var ne *NodeError
	require.ErrorAs(t, err, &ne)
}

func TestNewWithPools(t *testing.T) {
	servers := redistest.Start(t, 3)
	var pools []Pool
	for _, s := range servers {
		addr := s.Addr
		p := &redis.Pool{DialContext: func(ctx context.Context) (redis.Conn, error) {
			return redis.DialContext(ctx, "tcp", addr)
		}}
		defer p.Close()
		pools = append(pools, p)
	}
	c, err := New(pools, WithKeyPrefix("app:"))
	require.NoError(t, err)
	defer c.Close()
	ctx := context.Background()
	l, err := c.TryLock(ctx, "k", time.Second)
	require.NoError(t, err)
	assert.Equal(t, "k", l.Key())
	assert.Eventually(t, func() bool {
		for _, s := range servers {
			if v, _ := holder(t, s, "app:k"); v != l.Token() {
				return false
			}
		}
		return true
	}, time.Second, 2*time.Millisecond, "the key prefix is applied on the nodes")
	require.NoError(t, l.Unlock(ctx))

	servers[1].Kill()
	servers[2].Kill()
	_, err = c.TryLock(ctx, "k", time.Second)
	var ne *NodeError
	require.ErrorAs(t, err, &ne)
	assert.Contains(t, []string{"pool[1]", "pool[2]"}, ne.Addr)
}

func TestAuthenticatedNodes(t *testing.T) {
	servers := redistest.Start(t, 3, "--requirepass", "s3cret")
	var good, bad []string
	for _, s := range servers {
		good = append(good, "redis://:s3cret@"+s.Addr+"/2")
		bad = append(bad, "redis://default:wr0ng-s3cret@"+s.Addr)
	}
	c, err := Dial(good)
	require.NoError(t, err)
	defer c.Close()
	l, err := c.TryLock(context.Background(), "k", time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Unlock(context.Background()))

	c2, err := Dial(bad)
	require.NoError(t, err)
	defer c2.Close()
	_, err = c2.TryLock(context.Background(), "k", time.Second)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrQuorumUnreachable)
	assert.Contains(t, err.Error(), "WRONGPASS")
	assert.NotContains(t, err.Error(), "wr0ng-s3cret")
}

func TestBadInput(t *testing.T) {
	_, c := cluster(t, 1)
	ctx := context.Background()
	var nilClient *Client
	var nilLock *Lock
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"empty key", func() error { _, err := c.TryLock(ctx, "", time.Second); return err }, "empty key"},
		{"queue key", func() error { _, err := c.Lock(ctx, "jobs:waiters", time.Second); return err }, `ends in ":waiters"`},
		{"fence key", func() error { _, err := c.TryLock(ctx, "jobs:fence", time.Second); return err }, `ends in ":fence"`},
		{"zero ttl", func() error { _, err := c.TryLock(ctx, "k", 0); return err }, "ttl"},
		{"negative ttl", func() error { _, err := c.Lock(ctx, "k", -time.Second); return err }, "ttl"},
		{"sub-millisecond ttl", func() error { _, err := c.TryLock(ctx, "k", 500*time.Microsecond); return err }, "below 1ms"},
		{"ttl eaten by drift", func() error { _, err := c.TryLock(ctx, "k", 2*time.Millisecond); return err }, "no validity"},
		{"nil context", func() error { _, err := c.TryLock(nil, "k", time.Second); return err }, "nil context"}, //nolint:staticcheck
		{"nil client", func() error { _, err := nilClient.Lock(ctx, "k", time.Second); return err }, "nil *Client"},
		{"nil lock unlock", func() error { return nilLock.Unlock(ctx) }, "nil or zero *Lock"},
		{"zero lock extend", func() error { return (&Lock{}).Extend(ctx, time.Second) }, "nil or zero *Lock"},
		{"extend bad ttl", func() error {
			l, err := c.TryLock(ctx, "bad-extend", time.Second)
			require.NoError(t, err)
			defer l.Unlock(ctx)
			return l.Extend(ctx, 0)
		}, "ttl"},
		{"New without pools", func() error { _, err := New(nil); return err }, "no pools"},
		{"New with nil pool", func() error { _, err := New([]Pool{nil}); return err }, "pool 0 is nil"},
		{"New with typed nil pool", func() error { _, err := New([]Pool{(*redis.Pool)(nil)}); return err }, "pool 0 is nil"},
		{"New with the same pool twice", func() error {
			p := &redis.Pool{}
			_, err := New([]Pool{p, p})
			return err
		}, "same pool"},
		{"Dial without URLs", func() error { _, err := Dial(nil); return err }, "no node URLs"},
		{"Dial duplicate endpoints", func() error {
			_, err := Dial([]string{"LOCALHOST:1", "redis://localhost:1/2"})
			return err
		}, "both name localhost:1"},
		{"Dial malformed", func() error { _, err := Dial([]string{"redis://[::1"}); return err }, "malformed"},
		{"drift factor", func() error { _, err := Dial([]string{"h:1"}, WithDriftFactor(1)); return err }, "WithDriftFactor"},
		{"drift NaN", func() error { _, err := New([]Pool{&redis.Pool{}}, WithDriftFactor(nan())); return err }, "WithDriftFactor"},
		{"node timeout", func() error { _, err := Dial([]string{"h:1"}, WithNodeTimeout(0)); return err }, "WithNodeTimeout"},
		{"retry", func() error { _, err := Dial([]string{"h:1"}, WithRetry(0, 0)); return err }, "WithRetry"},
		{"nil option", func() error { _, err := Dial([]string{"h:1"}, nil); return err }, "option 0 is nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			require.NotPanics(t, func() { err = tt.call() })
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
	assert.ErrorIs(t, func() error { _, err := Dial([]string{"a:1", "a:1"}); return err }(), ErrDuplicateNode)
}

func nan() float64 { zero := 0.0; return zero / zero }

func TestClosedClient(t *testing.T) {
	servers := redistest.Start(t, 1)
	c, err := Dial(redistest.Addrs(servers))
	require.NoError(t, err)
	l, err := c.TryLock(context.Background(), "k", time.Second)
	require.NoError(t, err)
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "Close is idempotent")
	_, err = c.TryLock(context.Background(), "k", time.Second)
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, err, ErrNotObtained)
	_, err = c.Lock(context.Background(), "k", time.Second)
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, l.Unlock(context.Background()), ErrClosed)
}

// TestDriftReducesValidity drives the client's clock seam: an attempt that
// seems to take longer than the TTL is not granted, and is cleaned up.
func TestSlowAttemptIsNotGranted(t *testing.T) {
	servers := redistest.Start(t, 3)
	clk := &jumpClock{jump: 2 * time.Second}
	c := dial(t, servers, withClock(clk))
	_, err := c.TryLock(context.Background(), "k", time.Second)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrNotObtained)
	assert.NotErrorIs(t, err, ErrQuorumUnreachable)
	assert.Contains(t, err.Error(), "leaving no validity")
	for _, s := range servers {
		assert.Eventually(t, func() bool { v, _ := holder(t, s, "k"); return v == "" }, time.Second, 2*time.Millisecond,
			"a quorum without validity is released on %s", s.Addr)
	}
}

// jumpClock advances by jump on every second reading: each attempt appears
// to take jump.
type jumpClock struct {
	mu    sync.Mutex
	n     int
	jump  time.Duration
	extra time.Duration
}

func (c *jumpClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	if c.n%2 == 0 {
		c.extra += c.jump
	}
	return time.Now().Add(c.extra)
}

// TestLockConcurrentUse: one *Lock used from several goroutines at once
// (run with -race). Unlock wins: afterwards the key is gone everywhere and
// no Extend succeeds.
func TestLockConcurrentUse(t *testing.T) {
	servers, c := cluster(t, 5)
	ctx := context.Background()
	l, err := c.TryLock(ctx, "k", 5*time.Second)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				_ = l.Until()
				_ = l.Extend(ctx, 5*time.Second)
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, l.Unlock(ctx))
	wg.Wait()
	assert.ErrorIs(t, l.Extend(ctx, time.Second), ErrLockLost)
	require.Eventually(t, func() bool {
		for _, s := range servers {
			if v, _ := holder(t, s, "k"); v != "" {
				return false
			}
		}
		return true
	}, 2*time.Second, 5*time.Millisecond, "no Extend re-created the key after Unlock")
}
