package redlock

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redlockgo/redlock/internal/faultproxy"
	"github.com/redlockgo/redlock/internal/redistest"
)

// handoffSetUp makes the situation of a handoff: a Lock call of c (first)
// holds key "k" with ttl 1 min, and the next Lock call of c (second, asking
// for ttl2) waits behind it, registered on the nodes by first's winning
// attempt. first's lock and second's pending result are returned.
func handoffSetUp(t *testing.T, servers []*redistest.Server, c *Client, ttl2 time.Duration) (*Lock, <-chan lockResult) {
	t.Helper()
	ctx := context.Background()
	held, err := dial(t, servers).TryLock(ctx, "k", time.Minute)
	require.NoError(t, err)
	first := lockInBackground(ctx, c, "k", time.Minute)
	waitSubscribed(t, servers, releaseChannel("k"), len(servers))
	time.Sleep(2 * time.Millisecond)
	second := lockInBackground(ctx, c, "k", ttl2) // queued in the Client behind first
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, held.Unlock(ctx))
	r1 := <-first
	require.NoError(t, r1.err)
	require.Eventually(t, func() bool {
		for _, s := range servers {
			ids, err := redis.Strings(s.Do("ZRANGE", waitersKey("k"), 0, -1))
			if err != nil {
				return false
			}
			// first may keep an entry where its winning attempt was
			// refused, until its release.
			ids = slices.DeleteFunc(ids, func(id string) bool { return id == r1.l.waiter })
			if len(ids) != 1 {
				return false
			}
		}
		return true
	}, 5*time.Second, time.Millisecond, "second is queued on every node behind first")
	return r1.l, second
}

// nodeCalls sums cmdstat_<cmd> calls over the servers.
func nodeCalls(t *testing.T, servers []*redistest.Server, cmd string) int64 {
	t.Helper()
	var sum int64
	for _, s := range servers {
		info, err := redis.String(s.Do("INFO", "commandstats"))
		require.NoError(t, err)
		sum += commandCalls(info, cmd)
	}
	return sum
}

// Unlock hands the lock straight to the next Lock call of the same Client
// waiting behind it: one script run per node (the release), no attempt of
// the heir's own and no announcement; the nodes hold the heir's token with
// the heir's TTL, and the heir's validity counts from before the release
// was sent.
func TestUnlockHandsLockToNextCall(t *testing.T) {
	servers, c := cluster(t, 5)
	ctx := context.Background()
	const ttl2 = 7 * time.Second
	first, second := handoffSetUp(t, servers, c, ttl2)
	// first's attempt may have reached a node before the release of the
	// lock it waited for: that node refused it and holds nothing of first's.
	had := map[string]bool{}
	for _, s := range servers {
		v, _ := holder(t, s, "k")
		had[s.Addr] = v == first.Token()
	}
	scripts := func() int64 { return nodeCalls(t, servers, "evalsha") + nodeCalls(t, servers, "eval") }
	evals, pubs := scripts(), nodeCalls(t, servers, "publish")
	sent := time.Now()
	require.NoError(t, first.Unlock(ctx))
	r2 := <-second
	require.NoError(t, r2.err)
	assert.Equal(t, int64(5), scripts()-evals, "one script run per node: the release that hands the lock over")
	handed := 0
	for _, s := range servers {
		if !had[s.Addr] {
			continue
		}
		handed++
		v, pttl := holder(t, s, "k")
		assert.Equal(t, r2.l.Token(), v, s.Addr)
		assert.Greater(t, pttl, int64(ttl2/time.Millisecond)-1000, "the heir's TTL, not the holder's")
		assert.LessOrEqual(t, pttl, int64(ttl2/time.Millisecond))
	}
	assert.GreaterOrEqual(t, handed, 3)
	// A node without first's key announces only that first left its queue.
	assert.Equal(t, int64(5-handed), nodeCalls(t, servers, "publish")-pubs, "no release announced")
	assert.True(t, r2.l.Until().Before(sent.Add(ttl2)), "validity counts from before the release")
	assert.True(t, r2.l.Until().After(sent.Add(ttl2-time.Second)))
	require.NoError(t, r2.l.Unlock(ctx))
	for _, s := range servers {
		n, err := redis.Int(s.Do("EXISTS", "k", waitersKey("k"), waitExpiryKey("k")))
		require.NoError(t, err)
		assert.Zero(t, n, s.Addr)
	}
}

// A handoff that reaches too few nodes (the holder's key had gone from
// three of five) is not a lock. An heir that asks for more validity than
// the released lock has left waits for the nodes' answer: it releases what
// it was handed, says why, and gets the lock by an attempt of its own. One
// that took the lock before the answer (the released lock's validity
// covered it) has its lock end as lost once the answer comes.
func TestHandoffOnTooFewNodes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ttl2  time.Duration
		early bool
	}{
		{"heir waits for the nodes", 10 * time.Minute, false},
		{"heir took it at once", time.Minute, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var events []AcquireEvent
			servers, proxies, c := proxied(t, 5, WithObserver(Observer{Acquire: func(e AcquireEvent) {
				mu.Lock()
				events = append(events, e)
				mu.Unlock()
			}}))
			ctx := context.Background()
			first, second := handoffSetUp(t, servers, c, tc.ttl2)
			for _, s := range servers[:3] {
				_, err := s.Do("DEL", "k")
				require.NoError(t, err)
			}
			// Answers come late enough that an heir that may start early
			// always does, however slowly it is scheduled.
			for _, p := range proxies {
				p.Delay(100 * time.Millisecond)
			}
			mu.Lock()
			events = nil
			mu.Unlock()
			require.ErrorIs(t, first.Unlock(ctx), ErrLockLost)
			r2 := <-second
			require.NoError(t, r2.err)
			mu.Lock()
			ev := append([]AcquireEvent(nil), events...)
			mu.Unlock()
			if tc.early {
				require.Len(t, ev, 1, "%+v", ev)
				assert.Equal(t, OutcomeOK, ev[0].Outcome)
				assert.Equal(t, 5, countVotes(ev[0].Nodes, VotePending), "taken before the nodes answered")
				select {
				case <-r2.l.Done():
				case <-time.After(5 * time.Second):
					t.Fatal("the lock handed over was not found lost")
				}
				require.ErrorIs(t, r2.l.Extend(ctx, time.Minute), ErrLockLost)
				assert.Contains(t, r2.l.Extend(ctx, time.Minute).Error(), "a quorum no longer held the released lock")
				require.ErrorIs(t, r2.l.Unlock(ctx), ErrLockLost)
			} else {
				require.Len(t, ev, 2, "%+v", ev)
				assert.ErrorIs(t, ev[0].Err, ErrNotObtained)
				assert.Contains(t, ev[0].Err.Error(), "handed over by this Client's Unlock on too few nodes")
				// Decided by the three refusals, whatever the other two said by then.
				assert.Equal(t, 3, countVotes(ev[0].Nodes, VoteNo))
				assert.LessOrEqual(t, countVotes(ev[0].Nodes, VoteYes), 2)
				assert.Equal(t, OutcomeOK, ev[1].Outcome)
				for _, s := range servers {
					v, _ := holder(t, s, "k")
					assert.Equal(t, r2.l.Token(), v, "%s: the heir's own attempt holds every node", s.Addr)
				}
				require.NoError(t, r2.l.Unlock(ctx))
			}
			for _, s := range servers {
				n, err := redis.Int(s.Do("EXISTS", "k"))
				require.NoError(t, err)
				assert.Zero(t, n, s.Addr)
			}
		})
	}
}

// Within the released lock's validity the heir holds the lock before the
// nodes answer the release (here delayed 150 ms each way): Lock returns
// long before Unlock does, with the released lock's Until (the heir asked
// for more), raised once the nodes confirm.
func TestHandoffBeforeNodesAnswer(t *testing.T) {
	servers, proxies, c := proxied(t, 3)
	ctx := context.Background()
	const ttl2 = 90 * time.Second // more than first's minute, less than twice
	first, second := handoffSetUp(t, servers, c, ttl2)
	for _, p := range proxies {
		p.Delay(150 * time.Millisecond)
	}
	unlocked := make(chan error, 1)
	sent := time.Now()
	go func() { unlocked <- first.Unlock(ctx) }()
	r2 := <-second
	require.NoError(t, r2.err)
	took := r2.at.Sub(sent)
	t.Logf("heir holds the lock %v after Unlock began (round trip ≥ 300 ms)", took)
	assert.Less(t, took, 150*time.Millisecond, "before any node could answer")
	assert.Equal(t, first.Until(), r2.l.Until(), "the released lock's validity, until the nodes confirm")
	select {
	case err := <-unlocked:
		t.Fatalf("Unlock returned before the heir (%v)", err)
	default:
	}
	require.NoError(t, <-unlocked)
	require.Eventually(t, func() bool { return r2.l.Until().After(sent.Add(ttl2 - 2*time.Second)) }, 5*time.Second, time.Millisecond, "Until raised once the nodes confirmed")
	assert.True(t, r2.l.Until().Before(sent.Add(ttl2)), "counted from before the release")
	for _, p := range proxies {
		p.Heal()
	}
	require.NoError(t, r2.l.Unlock(ctx))
}

// Lock calls of one Client that hand the lock to each other while many of
// them give up at random moments (before, during and after being handed
// the lock) leave nothing behind: no handed token that nobody uses (it
// would hold the key for its 1-minute TTL), no queue entry.
func TestHandoffsLeaveNothingBehind(t *testing.T) {
	var handed, lost atomic.Int64
	servers := redistest.Start(t, 3)
	c := dial(t, servers, WithObserver(Observer{Acquire: func(e AcquireEvent) {
		if e.Err != nil && strings.Contains(e.Err.Error(), "handed over") {
			lost.Add(1)
		}
	}}))
	ctx := context.Background()
	var wg sync.WaitGroup
	deadline := time.Now().Add(1500 * time.Millisecond)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for time.Now().Before(deadline) {
				wait := time.Duration(rng.IntN(3000)) * time.Microsecond
				if w == 0 {
					// One worker that waits long enough to get the lock on
					// a starved machine too: the lock changes hands.
					wait = 200 * time.Millisecond
				}
				wctx, cancel := context.WithTimeout(ctx, wait)
				l, err := c.Lock(wctx, "k", time.Minute)
				cancel()
				if err != nil {
					continue
				}
				handed.Add(1)
				time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond)
				assert.NoError(t, l.Unlock(ctx))
			}
		}(w)
	}
	wg.Wait()
	t.Logf("%d locks, %d handoffs given up or missed", handed.Load(), lost.Load())
	assert.Positive(t, handed.Load())
	left := func() string {
		var out []string
		for i, s := range servers {
			v, pttl := holder(t, s, "k")
			q, _ := redis.Strings(s.Do("ZRANGE", waitersKey("k"), 0, -1, "WITHSCORES"))
			qx, _ := redis.Strings(s.Do("ZRANGE", waitExpiryKey("k"), 0, -1, "WITHSCORES"))
			if v != "" || len(q) > 0 || len(qx) > 0 {
				out = append(out, fmt.Sprintf("node %d: key %q (pttl %d ms), queue %v, expiries %v", i, v, pttl, q, qx))
			}
		}
		return strings.Join(out, "; ")
	}
	if !assert.Eventually(t, func() bool { return left() == "" }, 3*time.Second, time.Millisecond) {
		t.Fatalf("a lock key or queue entry was left behind: %s", left())
	}
	l, err := c.TryLock(ctx, "k", time.Second)
	require.NoError(t, err, "the key is free")
	require.NoError(t, l.Unlock(ctx))
}

// proxied starts n servers behind fault proxies and a Client dialled to
// the proxies.
func proxied(t *testing.T, n int, opts ...Option) ([]*redistest.Server, []*faultproxy.Proxy, *Client) {
	t.Helper()
	servers := redistest.Start(t, n)
	var proxies []*faultproxy.Proxy
	var addrs []string
	for _, s := range servers {
		p, err := faultproxy.New(s.Addr)
		require.NoError(t, err)
		t.Cleanup(func() { p.Close() })
		proxies = append(proxies, p)
		addrs = append(addrs, p.Addr())
	}
	c, err := Dial(addrs, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, c.Close()) })
	return servers, proxies, c
}

// An Unlock that handed the lock over but reached too few nodes (three of
// five dropped its release) leaves the released key there for the heir,
// which started on its validity: a retried Unlock does not delete it, and
// another Client cannot get the lock while the heir holds it.
func TestUnlockRetryAfterHandoffKeepsHeirsKeys(t *testing.T) {
	servers, proxies, c := proxied(t, 5, WithNodeTimeout(200*time.Millisecond))
	ctx := context.Background()
	first, second := handoffSetUp(t, servers, c, time.Minute)
	// first's attempt may have been refused by a node that the release of
	// the lock it waited for had not reached yet.
	had := map[string]bool{}
	for _, s := range servers {
		v, _ := holder(t, s, "k")
		had[s.Addr] = v == first.Token()
	}
	for _, p := range proxies[2:] {
		p.Blackhole()
	}
	unlocked := make(chan error, 1)
	go func() { unlocked <- first.Unlock(ctx) }()
	r2 := <-second
	require.NoError(t, r2.err)
	for _, p := range proxies[2:] {
		p.Reset() // the held releases are dropped with the connections
	}
	require.Error(t, <-unlocked)
	for _, p := range proxies[2:] {
		p.Heal()
	}
	err := first.Unlock(ctx)
	require.ErrorIs(t, err, ErrLockLost)
	assert.Contains(t, err.Error(), "handed over by an earlier Unlock")
	for _, s := range servers[2:] {
		if had[s.Addr] {
			v, _ := holder(t, s, "k")
			assert.Equal(t, first.Token(), v, "%s: the released key stays for the heir", s.Addr)
		}
	}
	require.True(t, time.Until(r2.l.Until()) > 10*time.Second)
	_, err = dial(t, servers).TryLock(ctx, "k", time.Second)
	require.ErrorIs(t, err, ErrNotObtained, "nobody else gets the lock the heir holds")
}

// Refusals that arrive after the handoff was decided on "a quorum can no
// longer hand it over" (one node failed, two refused) still end an early
// heir's lock once they make a quorum, as the releasing Unlock reports the
// loss.
func TestHandoffLateRefusalsEndHeir(t *testing.T) {
	servers, proxies, c := proxied(t, 5, WithNodeTimeout(2*time.Second))
	ctx := context.Background()
	first, second := handoffSetUp(t, servers, c, time.Minute)
	for _, s := range servers[1:] {
		_, err := s.Do("DEL", "k") // first was lost (outside Redlock's assumptions)
		require.NoError(t, err)
	}
	proxies[0].Blackhole()
	proxies[1].Delay(100 * time.Millisecond)
	proxies[2].Delay(100 * time.Millisecond)
	proxies[3].Delay(500 * time.Millisecond)
	proxies[4].Delay(500 * time.Millisecond)
	unlocked := make(chan error, 1)
	go func() { unlocked <- first.Unlock(ctx) }()
	r2 := <-second
	require.NoError(t, r2.err)
	proxies[0].Reset()
	require.ErrorIs(t, <-unlocked, ErrLockLost)
	select {
	case <-r2.l.Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("the heir still holds, Until in %v", time.Until(r2.l.Until()))
	}
	require.ErrorIs(t, r2.l.Extend(ctx, time.Minute), ErrLockLost)
	for _, p := range proxies {
		p.Heal()
	}
	require.ErrorIs(t, r2.l.Unlock(ctx), ErrLockLost)
}

// Two Unlocks of one lock at once hand it over once: no second handed
// token is left on the nodes with nobody to release it.
func TestConcurrentUnlocksHandOverOnce(t *testing.T) {
	for range 5 {
		servers := redistest.Start(t, 3)
		c := dial(t, servers)
		ctx := context.Background()
		first, second := handoffSetUp(t, servers, c, time.Minute)
		errs := make(chan error, 2)
		start := make(chan struct{})
		for range 2 {
			go func() { <-start; errs <- first.Unlock(ctx) }()
		}
		close(start)
		r2 := <-second
		require.NoError(t, r2.err)
		e1, e2 := <-errs, <-errs
		assert.True(t, e1 == nil || e2 == nil, "one Unlock released: %v / %v", e1, e2)
		require.NoError(t, r2.l.Unlock(ctx))
		for i, s := range servers {
			v, pttl := holder(t, s, "k")
			assert.Empty(t, v, "node %d still holds a key (pttl %d) after every holder unlocked", i, pttl)
		}
	}
}
