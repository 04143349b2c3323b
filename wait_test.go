package redlock

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redlockgo/redlock/internal/redistest"
)

func TestMissOf(t *testing.T) {
	no := func(holder string, pttl int64) result { return result{vote: voteNo, holder: holder, val: pttl} }
	yes, fail, pending := result{vote: voteYes}, result{vote: voteFail}, result{}
	tests := []struct {
		name    string
		results []result
		want    miss
	}{
		{"held on all five", []result{no("A", 900), no("A", 800), no("A", 1000), pending, pending},
			miss{wait: 1000 * time.Millisecond, winner: "A"}},
		{"winner on a bare majority, two free", []result{yes, yes, no("A", 700), no("A", 500), no("A", 600)},
			miss{wait: 500 * time.Millisecond, winner: "A"}},
		{"split vote", []result{yes, no("B", 900), no("B", 900), no("C", 900), yes},
			miss{wait: 900 * time.Millisecond, split: true}},
		{"two holders, no quorum, we got none", []result{no("B", 300), no("B", 400), no("C", 100), no("C", 200), fail},
			miss{wait: 300 * time.Millisecond}},
		{"key without ttl is unknown", []result{no("A", -1), no("A", -1), no("A", -1), fail, fail},
			miss{wait: -1, winner: "A"}},
		{"too few answers", []result{no("A", 100), fail, fail, fail, pending},
			miss{wait: -1}},
		{"single node", []result{no("A", 40)}, miss{wait: 40 * time.Millisecond, winner: "A"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			votes := make([]vote, len(tt.results))
			for i, r := range tt.results {
				votes[i] = r.vote
			}
			assert.Equal(t, tt.want, *missOf(votes, tt.results))
		})
	}
}

// waitSubscribed blocks until channel has a subscriber on at least n nodes.
func waitSubscribed(t *testing.T, servers []*redistest.Server, channel string, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return subscribers(t, servers, channel) >= n }, 5*time.Second, 2*time.Millisecond)
}

// subscribers counts the nodes on which channel has a subscriber.
func subscribers(t *testing.T, servers []*redistest.Server, channel string) int {
	got := 0
	for _, s := range servers {
		if !s.Running() {
			continue
		}
		vals, err := redis.Values(s.Do("PUBSUB", "NUMSUB", channel))
		if err != nil {
			continue // a paused node
		}
		var name string
		var count int
		if _, err := redis.Scan(vals, &name, &count); err == nil && count > 0 {
			got++
		}
	}
	return got
}

// lockInBackground starts Lock in a goroutine and returns a channel that
// delivers its result.
func lockInBackground(ctx context.Context, c *Client, key string, ttl time.Duration) <-chan lockResult {
	ch := make(chan lockResult, 1)
	go func() {
		l, err := c.Lock(ctx, key, ttl)
		ch <- lockResult{l, err, time.Now()}
	}()
	return ch
}

type lockResult struct {
	l   *Lock
	err error
	at  time.Time
}

// A waiter resumes within a round trip of Unlock, not after a poll interval:
// with polling pushed to 10 s and the holder's TTL at 60 s, only the release
// message can wake it.
func TestLockWakesOnRelease(t *testing.T) {
	servers, holderC := cluster(t, 5)
	waiterC := dial(t, servers, WithRetry(10*time.Second, 0))
	ctx := context.Background()
	held, err := holderC.TryLock(ctx, "k", time.Minute)
	require.NoError(t, err)
	res := lockInBackground(ctx, waiterC, "k", time.Minute)
	waitSubscribed(t, servers, releaseChannel("k"), 5)
	time.Sleep(20 * time.Millisecond) // let the waiter finish its post-subscription attempt
	unlocked := time.Now()
	require.NoError(t, held.Unlock(ctx))
	select {
	case r := <-res:
		require.NoError(t, r.err)
		// Measured 1–3 ms on loopback.
		assert.Less(t, r.at.Sub(unlocked), 500*time.Millisecond)
		require.NoError(t, r.l.Unlock(ctx))
	case <-time.After(5 * time.Second):
		t.Fatal("waiter not woken by the release")
	}
	assert.Eventually(t, func() bool { return subscribers(t, servers, releaseChannel("k")) == 0 },
		2*time.Second, 5*time.Millisecond, "the subscription is dropped once no waiter needs it")
}

// A holder that crashes never announces a release: the waiter wakes when
// the holder's keys expire (the quorum-th smallest PTTL), not a poll later.
func TestWaiterAfterHolderCrash(t *testing.T) {
	servers, c := cluster(t, 5, WithRetry(10*time.Second, 0))
	crashed := dial(t, servers)
	ctx := context.Background()
	_, err := crashed.TryLock(ctx, "k", 700*time.Millisecond) // never unlocked
	require.NoError(t, err)
	start := time.Now()
	l, err := c.Lock(ctx, "k", time.Second)
	require.NoError(t, err)
	took := time.Since(start)
	t.Logf("acquired %v after the crashed holder's 700 ms lock", took)
	assert.Greater(t, took, 400*time.Millisecond)
	assert.Less(t, took, 3*time.Second, "woken by the TTL, not by the 10 s retry")
	require.NoError(t, l.Unlock(ctx))
}

// Handoff keeps working when a node restarts under the subscriber (it
// reconnects) and when a node is paused (a quorum of confirmations suffices).
func TestHandoffWithNodeFaults(t *testing.T) {
	servers, holderC := cluster(t, 5)
	waiterC := dial(t, servers, WithRetry(10*time.Second, 0))
	ctx := context.Background()
	for _, fault := range []string{"restart", "pause"} {
		t.Run(fault, func(t *testing.T) {
			held, err := holderC.TryLock(ctx, "k", time.Minute)
			require.NoError(t, err)
			res := lockInBackground(ctx, waiterC, "k", time.Minute)
			waitSubscribed(t, servers, releaseChannel("k"), 5)
			switch fault {
			case "restart":
				require.NoError(t, servers[0].Restart()) // its copy of the key is gone too
				waitSubscribed(t, servers, releaseChannel("k"), 5)
			case "pause":
				servers[0].Pause()
				defer servers[0].Resume()
			}
			time.Sleep(20 * time.Millisecond)
			unlocked := time.Now()
			require.NoError(t, held.Unlock(ctx))
			select {
			case r := <-res:
				require.NoError(t, r.err)
				assert.Less(t, r.at.Sub(unlocked), time.Second)
				servers[0].Resume()
				require.NoError(t, r.l.Unlock(ctx))
			case <-time.After(8 * time.Second):
				t.Fatal("waiter not woken")
			}
		})
	}
}

// Cancelling a waiting Lock returns promptly and leaves nothing subscribed.
func TestCancelledWaitLeavesNoSubscription(t *testing.T) {
	servers, c := cluster(t, 5)
	ctx := context.Background()
	held, err := c.TryLock(ctx, "k", time.Minute)
	require.NoError(t, err)
	wctx, cancel := context.WithCancel(ctx)
	res := lockInBackground(wctx, dial(t, servers), "k", time.Minute)
	waitSubscribed(t, servers, releaseChannel("k"), 5)
	cancelled := time.Now()
	cancel()
	r := <-res
	assert.Less(t, r.at.Sub(cancelled), 500*time.Millisecond)
	assert.ErrorIs(t, r.err, ErrNotObtained)
	assert.ErrorIs(t, r.err, context.Canceled)
	assert.Eventually(t, func() bool { return subscribers(t, servers, releaseChannel("k")) == 0 },
		2*time.Second, 5*time.Millisecond, "no subscription left behind")
	require.NoError(t, held.Unlock(ctx))
}

// The release script announces with pcall: a user whose ACL forbids
// publishing on the channel still releases, and Unlock reports it.
func TestReleaseWithPublishForbidden(t *testing.T) {
	servers := redistest.Start(t, 3)
	var urls []string
	for _, s := range servers {
		_, err := s.Do("ACL", "SETUSER", "locker", "on", ">pw", "~*", "resetchannels", "+@all")
		require.NoError(t, err)
		urls = append(urls, "redis://locker:pw@"+s.Addr)
	}
	c, err := Dial(urls)
	require.NoError(t, err)
	defer c.Close()
	ctx := context.Background()
	l, err := c.TryLock(ctx, "k", 10*time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Unlock(ctx), "the release must count although PUBLISH was refused")
	// A node whose acquire had not answered when TryLock returned (its first
	// contact) is released in the background, behind that acquire.
	keyGone(t, servers, "k", 5*time.Second)
}

// Many goroutines of one Client and several Clients contend for one key:
// every worker keeps getting the lock (no starvation), and handoffs go on.
func TestContendedHandoffs(t *testing.T) {
	servers, _ := cluster(t, 5)
	clients := []*Client{dial(t, servers), dial(t, servers), dial(t, servers)}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var mu sync.Mutex
	grants := map[int]int{}
	var maxWait time.Duration
	var wg sync.WaitGroup
	for w := 0; w < 12; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := clients[w%len(clients)]
			for ctx.Err() == nil {
				start := time.Now()
				l, err := c.Lock(ctx, "hot", 5*time.Second)
				if err != nil {
					return
				}
				mu.Lock()
				grants[w]++
				maxWait = max(maxWait, time.Since(start))
				mu.Unlock()
				l.Unlock(context.Background())
			}
		}(w)
	}
	wg.Wait()
	total := 0
	for w := 0; w < 12; w++ {
		assert.Greater(t, grants[w], 0, "worker %d starved", w)
		total += grants[w]
	}
	t.Logf("%d grants in 3 s, longest wait %v", total, maxWait)
	// Unloaded this is several hundred grants per second; the bounds only
	// catch a collapse or a waiter left to sleep until the holder's TTL.
	assert.Greater(t, total, 30, "handoffs must not collapse")
	assert.Less(t, maxWait, 4*time.Second, "no waiter waits for the holder's TTL (5 s)")
}
