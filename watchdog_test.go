package redlock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redlockgo/redlock/internal/redistest"
)

// holders counts the nodes on which key holds token.
func holdersOf(t *testing.T, servers []*redistest.Server, key, token string) int {
	t.Helper()
	n := 0
	for _, s := range servers {
		if !s.Running() {
			continue
		}
		if v, _ := holder(t, s, key); v == token {
			n++
		}
	}
	return n
}

// mustLock acquires key, retrying for a while: on a loaded machine a single
// attempt can miss its per-node timeouts, and these tests are not about that.
func mustLock(t *testing.T, c *Client, key string, ttl time.Duration) *Lock {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := c.Lock(ctx, key, ttl)
	require.NoError(t, err)
	return l
}

// allGone reports whether no node holds key.
func allGone(t *testing.T, servers []*redistest.Server, key string) bool {
	t.Helper()
	for _, s := range servers {
		if v, _ := holder(t, s, key); v != "" {
			return false
		}
	}
	return true
}

func TestLossMarginAndBackoff(t *testing.T) {
	assert.Equal(t, 2*time.Second, LossMargin(10*time.Second, time.Second))
	assert.Equal(t, 200*time.Millisecond, LossMargin(time.Second, 100*time.Millisecond))
	assert.Equal(t, 6*time.Second, LossMargin(60*time.Second, time.Second), "ttl/10 wins for long TTLs")
	// The default margin (two per-node timeouts of MinNodeTimeout for short
	// TTLs) leaves room for the renewal schedule down to about 850 ms.
	c, err := Dial([]string{"127.0.0.1:1"})
	require.NoError(t, err)
	defer c.Close()
	assert.NoError(t, c.checkKeepAlive("Do", 900*time.Millisecond))
	assert.NoError(t, c.checkKeepAlive("Do", 10*time.Second))
	assert.Error(t, c.checkKeepAlive("Do", 800*time.Millisecond))
	// A shorter per-node timeout makes shorter TTLs usable.
	fast, err := Dial([]string{"127.0.0.1:1"}, WithNodeTimeout(50*time.Millisecond))
	require.NoError(t, err)
	defer fast.Close()
	assert.NoError(t, fast.checkKeepAlive("Do", 500*time.Millisecond))

	ttl := 3 * time.Second
	assert.Equal(t, 100*time.Millisecond, renewBackoff(ttl, 1))
	assert.Equal(t, 200*time.Millisecond, renewBackoff(ttl, 2))
	assert.Equal(t, 300*time.Millisecond, renewBackoff(ttl, 3), "capped at ttl/10")
	assert.Equal(t, 300*time.Millisecond, renewBackoff(ttl, 50))
	// The first renewal (ttl/3) plus a few backoffs stays before the loss
	// deadline (ttl - drift - margin >= ttl/2).
	assert.Less(t, ttl/RenewalDivisor+renewBackoff(ttl, 1)+renewBackoff(ttl, 2), ttl/2+ttl/10)
}

// TestDoKeepsLockBeyondTTL: fn runs for 3× the TTL; a contender never gets
// the lock meanwhile, and gets it once Do has returned.
func TestDoKeepsLockBeyondTTL(t *testing.T) {
	servers, c := cluster(t, 5, WithNodeTimeout(200*time.Millisecond))
	other := dial(t, servers)
	ctx := context.Background()
	const ttl = time.Second

	var attempts, contended, renewedUntil int
	err := c.Do(ctx, "k", ttl, func(fctx context.Context, l *Lock) error {
		first := l.Until()
		end := time.Now().Add(3 * ttl)
		for time.Now().Before(end) {
			_, err := other.TryLock(ctx, "k", ttl)
			require.Error(t, err, "contender got the lock while fn runs")
			assert.ErrorIs(t, err, ErrNotObtained)
			if !errors.Is(err, ErrQuorumUnreachable) { // a loaded machine can time out
				contended++
			}
			attempts++
			assert.NoError(t, fctx.Err(), "fn's context must stay live")
			assert.True(t, time.Now().Before(l.Until()), "the lock stays valid")
			time.Sleep(25 * time.Millisecond)
		}
		if l.Until().After(first.Add(ttl)) {
			renewedUntil++
		}
		select {
		case <-l.Done():
			t.Error("Done closed while the lock is kept alive")
		default:
		}
		return nil
	})
	require.NoError(t, err)
	assert.Greater(t, attempts, 20)
	assert.Greater(t, contended, attempts/2, "the contender was refused because the lock is held")
	assert.Equal(t, 1, renewedUntil, "renewals moved Until by more than a TTL")
	// Do released: the contender gets it.
	require.NoError(t, mustLock(t, other, "k", ttl).Unlock(ctx))
}

// TestDoLosesMajority: with a majority of nodes killed or paused while fn
// runs, fn's context is cancelled before the validity of the last successful
// renewal ends, Done closes, and Do reports ErrLockLost although fn returned nil.
func TestDoLosesMajority(t *testing.T) {
	for _, mode := range []faultMode{killed, paused} {
		t.Run(mode.String(), func(t *testing.T) {
			servers, c := cluster(t, 5, WithNodeTimeout(100*time.Millisecond))
			ctx := context.Background()
			const ttl = time.Second
			margin := LossMargin(ttl, 100*time.Millisecond)
			var cancelledAt, lastUntil time.Time
			var cause error
			var doneClosed bool
			err := c.Do(ctx, "k", ttl, func(fctx context.Context, l *Lock) error {
				first := l.Until()
				// Wait for a renewal, so that the deadline checked is a renewal's.
				for !l.Until().After(first) {
					time.Sleep(5 * time.Millisecond)
				}
				for _, s := range servers[:3] {
					if mode == killed {
						s.Kill()
					} else {
						s.Pause()
					}
				}
				select {
				case <-fctx.Done():
					cancelledAt = time.Now()
				case <-time.After(5 * ttl):
					t.Error("fn's context was not cancelled after the majority went away")
				}
				cause = context.Cause(fctx)
				lastUntil = l.Until() // final: renewals stopped with the loss
				select {
				case <-l.Done():
					doneClosed = true
				case <-time.After(time.Second):
				}
				return nil
			})
			for _, s := range servers[:3] {
				s.Resume()
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrLockLost, "Do reports the loss although fn returned nil")
			assert.ErrorIs(t, cause, ErrLockLost, "context.Cause of fn's context")
			assert.True(t, doneClosed, "Done closed with the loss")
			require.False(t, cancelledAt.IsZero())
			assert.True(t, cancelledAt.Before(lastUntil), "cancelled at %v, after the last validity deadline %v", cancelledAt, lastUntil)
			// The loss deadline is Until - margin; it should not fire much earlier.
			assert.False(t, cancelledAt.Before(lastUntil.Add(-margin-50*time.Millisecond)),
				"cancelled %v before Until, margin is %v", lastUntil.Sub(cancelledAt), margin)
			assert.Contains(t, err.Error(), "loss deadline")
		})
	}
}

// TestRenewalFindsLockGone: a renewal that finds the key gone on every node
// ends the lock at once (ErrLockLost), without waiting for the deadline, and
// Extend then refuses.
func TestRenewalFindsLockGone(t *testing.T) {
	servers, c := cluster(t, 5)
	ctx := context.Background()
	const ttl = 3 * time.Second
	l := mustLock(t, c, "k", ttl)
	require.NoError(t, l.KeepAlive())
	dropEverywhere(t, servers, l)
	start := time.Now()
	select {
	case <-l.Done():
	case <-time.After(5 * ttl):
		t.Fatal("Done not closed")
	}
	// The first renewal is due at ttl/3 after acquisition, the deadline at ~ttl*0.7.
	assert.Less(t, time.Since(start), ttl/2, "ended by the renewal, not by the deadline")
	err := l.Extend(ctx, ttl)
	assert.ErrorIs(t, err, ErrLockLost)
	assert.Contains(t, err.Error(), "no longer holds")
	assert.ErrorIs(t, l.KeepAlive(), ErrLockLost)
	assert.True(t, allGone(t, servers, "k"), "renewal never re-creates a key")
	assert.ErrorIs(t, l.Unlock(ctx), ErrLockLost)
}

func TestDoPanicReleases(t *testing.T) {
	servers, c := cluster(t, 5)
	ctx := context.Background()
	var token string
	func() {
		defer func() {
			assert.Equal(t, "boom", recover(), "the panic continues after the release")
		}()
		_ = c.Do(ctx, "k", time.Second, func(ctx context.Context, l *Lock) error {
			token = l.Token()
			require.GreaterOrEqual(t, holdersOf(t, servers, "k", token), quorum(5))
			panic("boom")
		})
		t.Error("Do returned instead of panicking")
	}()
	require.NotEmpty(t, token)
	// Unlock returned after a quorum released; the rest follow at once.
	assert.LessOrEqual(t, holdersOf(t, servers, "k", token), 5-quorum(5))
	require.Eventually(t, func() bool { return allGone(t, servers, "k") }, time.Second, 5*time.Millisecond)
	l, err := c.TryLock(ctx, "k", 10*time.Second)
	if err != nil {
		require.ErrorIs(t, err, ErrQuorumUnreachable, "released by the panic")
		l = mustLock(t, c, "k", 10*time.Second)
	}
	require.NoError(t, l.Unlock(ctx))
}

func TestDoReturnsFnError(t *testing.T) {
	_, c := cluster(t, 3)
	ctx := context.Background()
	errFn := errors.New("fn failed")
	err := c.Do(ctx, "k", time.Second, func(context.Context, *Lock) error { return errFn })
	assert.Equal(t, errFn, err, "fn's error, unwrapped, when the lock was held throughout")

	// Acquisition failure: fn never runs, ErrNotObtained.
	held := mustLock(t, c, "k", 10*time.Second)
	wctx, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
	defer cancel()
	ran := false
	err = c.Do(wctx, "k", time.Second, func(context.Context, *Lock) error { ran = true; return nil })
	assert.False(t, ran)
	assert.ErrorIs(t, err, ErrNotObtained)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, ErrLockLost)
	require.NoError(t, held.Unlock(ctx))

	// The caller's cancellation reaches fn, and is not a loss.
	cctx, ccancel := context.WithCancel(ctx)
	err = c.Do(cctx, "k", time.Second, func(fctx context.Context, _ *Lock) error {
		ccancel()
		<-fctx.Done()
		return fctx.Err()
	})
	assert.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, ErrLockLost)
}

// fn may release the lock early: Do does not release it again nor report
// a loss.
func TestDoEarlyUnlock(t *testing.T) {
	servers, c := cluster(t, 3)
	ctx := context.Background()
	err := c.Do(ctx, "k", time.Second, func(fctx context.Context, l *Lock) error {
		require.NoError(t, l.Unlock(ctx))
		<-l.Done()
		assert.LessOrEqual(t, holdersOf(t, servers, "k", l.Token()), 1, "released by fn")
		return nil
	})
	assert.NoError(t, err)
}

// TestDoLossJoinsFnError: after a loss, Do's error matches both fn's error
// and ErrLockLost.
func TestDoLossJoinsFnError(t *testing.T) {
	servers, c := cluster(t, 3)
	errFn := errors.New("fn failed")
	err := c.Do(context.Background(), "k", time.Second, func(fctx context.Context, l *Lock) error {
		for _, s := range servers {
			_, err := s.Do("DEL", "k")
			require.NoError(t, err)
		}
		<-fctx.Done()
		return errFn
	})
	assert.ErrorIs(t, err, errFn)
	assert.ErrorIs(t, err, ErrLockLost)
}

func TestKeepAliveAndDone(t *testing.T) {
	servers, c := cluster(t, 5, WithNodeTimeout(200*time.Millisecond))
	other := dial(t, servers)
	ctx := context.Background()
	const ttl = time.Second

	l := mustLock(t, c, "k", ttl)
	require.NoError(t, l.KeepAlive())
	require.NoError(t, l.KeepAlive(), "KeepAlive twice is harmless")
	time.Sleep(3 * ttl)
	select {
	case <-l.Done():
		t.Fatal("Done closed on a kept-alive lock")
	default:
	}
	assert.True(t, time.Now().Before(l.Until()))
	_, err := other.TryLock(ctx, "k", ttl)
	assert.ErrorIs(t, err, ErrNotObtained)
	assert.GreaterOrEqual(t, holdersOf(t, servers, "k", l.Token()), quorum(5))

	require.NoError(t, l.Unlock(ctx))
	select {
	case <-l.Done():
	default:
		t.Fatal("Done must be closed when Unlock returns")
	}
	assert.ErrorIs(t, l.KeepAlive(), ErrLockLost, "KeepAlive after Unlock")
	require.Eventually(t, func() bool { return allGone(t, servers, "k") }, time.Second, 5*time.Millisecond)
	// Done on a lock obtained later, and on a nil lock.
	var nilLock *Lock
	select {
	case <-nilLock.Done():
	default:
		t.Fatal("a nil lock's Done is closed")
	}
	assert.Error(t, nilLock.KeepAlive())
}

// TestDoneOnExpiry: without KeepAlive, Done closes when Until passes, and
// follows Until when Extend moves it.
func TestDoneOnExpiry(t *testing.T) {
	_, c := cluster(t, 3)
	ctx := context.Background()
	l := mustLock(t, c, "k", time.Second)
	done := l.Done()
	assert.Equal(t, done, l.Done(), "the same channel every time")
	require.NoError(t, l.Extend(ctx, 2*time.Second))
	until := l.Until()
	select {
	case <-done:
		t.Fatal("Done closed before the extended Until")
	case <-time.After(time.Until(until) - 100*time.Millisecond):
	}
	select {
	case <-done:
		assert.False(t, time.Now().Before(until), "closed at or after Until")
		assert.Less(t, time.Since(until), 500*time.Millisecond)
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after Until")
	}
	assert.ErrorIs(t, l.KeepAlive(), ErrLockLost, "too late to keep alive")
	assert.ErrorIs(t, l.Unlock(ctx), ErrLockLost)
}

// TestMaxHold: auto-extension stops at the cap and the loss is reported.
func TestMaxHold(t *testing.T) {
	_, c := cluster(t, 3, WithMaxHold(2*time.Second))
	var held time.Duration
	err := c.Do(context.Background(), "k", time.Second, func(fctx context.Context, l *Lock) error {
		start := time.Now() // after KeepAlive, which starts the cap
		select {
		case <-fctx.Done():
			held = time.Since(start)
		case <-time.After(10 * time.Second):
			t.Error("not cancelled at the cap")
		}
		return nil
	})
	assert.ErrorIs(t, err, ErrLockLost)
	assert.Contains(t, err.Error(), "WithMaxHold")
	assert.Less(t, held, 2*time.Second, "never held past the cap")
	assert.Greater(t, held, time.Second, "renewed until close to the cap")
}

// TestCloseEndsKeepAlive: Close stops renewals; a running Do sees its lock
// lost (ErrLockLost and ErrClosed) and Done channels close.
func TestCloseEndsKeepAlive(t *testing.T) {
	servers := redistest.Start(t, 3)
	c, err := Dial(redistest.Addrs(servers))
	require.NoError(t, err)
	ctx := context.Background()
	watched, err := c.TryLock(ctx, "watched", 10*time.Second)
	require.NoError(t, err)
	watchedDone := watched.Done()
	started := make(chan struct{})
	result := make(chan error, 1)
	go func() {
		result <- c.Do(ctx, "k", time.Second, func(fctx context.Context, l *Lock) error {
			close(started)
			<-fctx.Done()
			return nil
		})
	}()
	<-started
	require.NoError(t, c.Close())
	select {
	case err := <-result:
		assert.ErrorIs(t, err, ErrLockLost)
		assert.ErrorIs(t, err, ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("Do did not return after Close")
	}
	select {
	case <-watchedDone:
	default:
		t.Error("Close must close open Done channels")
	}
	assert.ErrorIs(t, watched.KeepAlive(), ErrClosed)
}

// TestRenewalsShareRoundTrips: many kept-alive locks are renewed with a
// handful of extend calls per node, not one per lock.
func TestRenewalsShareRoundTrips(t *testing.T) {
	servers, c := cluster(t, 3, WithNodeTimeout(250*time.Millisecond))
	ctx := context.Background()
	const n, ttl = 200, 1200 * time.Millisecond
	locks := make([]*Lock, n)
	for i := range locks {
		l := mustLock(t, c, fmt.Sprint("k", i), ttl)
		require.NoError(t, l.KeepAlive())
		locks[i] = l
	}
	before := evalCalls(t, servers[0])
	time.Sleep(3 * ttl) // about 9 renewal periods
	calls := evalCalls(t, servers[0]) - before
	for _, l := range locks {
		select {
		case <-l.Done():
			t.Fatal("a kept-alive lock ended")
		default:
		}
		require.NoError(t, l.Unlock(ctx))
	}
	t.Logf("%d extend calls on one node for %d locks over ~9 renewal periods", calls, n)
	// One call per lock and period would be ~1800; batches make it ~10-40.
	assert.Less(t, calls, int64(n), "extend calls on one node over 9 renewal periods of %d locks", n)
	assert.Greater(t, calls, int64(3), "renewals did happen")
}

// evalCalls returns how many EVALSHA and EVAL commands s has run.
func evalCalls(t *testing.T, s *redistest.Server) int64 {
	t.Helper()
	info, err := redis.String(s.Do("INFO", "commandstats"))
	require.NoError(t, err)
	return commandCalls(info, "evalsha") + commandCalls(info, "eval")
}

// commandCalls reads cmdstat_<cmd>:calls=N from INFO commandstats.
func commandCalls(info, cmd string) int64 {
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls=")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.SplitN(rest, ",", 2)[0], 10, 64)
		return n
	}
	return 0
}

// monitorLine matches a MONITOR line: timestamp, then quoted arguments.
var (
	monitorLine = regexp.MustCompile(`^(\d+)\.(\d+) \[[^\]]*\] (.*)$`)
	monitorArg  = regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`)
)

// monitored is one script call seen by MONITOR.
type monitored struct {
	at   time.Time
	sha  string
	keys []string
}

// monitor records every EVALSHA on s until stop is called.
func monitor(t *testing.T, s *redistest.Server) (stop func() []monitored) {
	t.Helper()
	conn, err := redis.Dial("tcp", s.Addr)
	require.NoError(t, err)
	require.NoError(t, conn.Send("MONITOR"))
	require.NoError(t, conn.Flush())
	ok, err := redis.String(conn.Receive())
	require.NoError(t, err)
	require.Equal(t, "OK", ok)
	var calls []monitored
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		for {
			line, err := redis.String(conn.Receive())
			if err != nil {
				return
			}
			m := monitorLine.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			var args []string
			for _, a := range monitorArg.FindAllStringSubmatch(m[3], -1) {
				args = append(args, a[1])
			}
			if len(args) < 3 || !strings.EqualFold(args[0], "evalsha") {
				continue
			}
			nk, _ := strconv.Atoi(args[2])
			sec, _ := strconv.ParseInt(m[1], 10, 64)
			usec, _ := strconv.ParseInt(m[2], 10, 64)
			calls = append(calls, monitored{at: time.Unix(sec, usec*1000), sha: args[1], keys: args[3 : 3+min(nk, len(args)-3)]})
		}
	}()
	return func() []monitored {
		conn.Close()
		<-ended
		return calls
	}
}

// spyTransport records the extend calls sent to one node: their keys, and
// when the call started and returned.
type spyTransport struct {
	transport
	mu    *sync.Mutex
	calls *[]spied
}

type spied struct {
	keys       []string
	start, end time.Time
}

func (s spyTransport) eval(ctx context.Context, sc *script, keysAndArgs ...interface{}) (interface{}, error) {
	start := time.Now()
	reply, err := s.transport.eval(ctx, sc, keysAndArgs...)
	if sc == extendScript {
		n := keysAndArgs[0].(int)
		keys := make([]string, n)
		for i := range keys {
			keys[i] = keysAndArgs[1+i].(string)
		}
		s.mu.Lock()
		*s.calls = append(*s.calls, spied{keys: keys, start: start, end: time.Now()})
		s.mu.Unlock()
	}
	return reply, err
}

// TestUnlockStopsRenewal races Unlock against renewals in flight, many
// times, with a TTL so short that renewals are frequent. It checks that
//   - in the client, no renewal round trip of a lock starts or is still in
//     progress when its Unlock returns (a spy on the transport);
//   - on the servers (MONITOR), no renewal of a lock runs after its Unlock
//     returned, nor after its release on that node;
//   - once every lock is unlocked, script traffic stops and no key is left:
//     nothing keeps renewing orphans (Redisson's bug).
//
// The per-node timeout is long, so that every renewal's reply is awaited: a
// command abandoned at a timeout may reach a loaded server later than the
// client moved on, which no client can prevent (and which the extend script
// makes harmless: it never re-creates a key). A small explicit loss margin
// keeps the TTL, and so the renewal period, short.
func TestUnlockStopsRenewal(t *testing.T) {
	const (
		ttl         = 150 * time.Millisecond
		period      = ttl / RenewalDivisor
		iterations  = 200
		concurrency = 8
	)
	servers, c := cluster(t, 5, WithNodeTimeout(time.Second), WithLossMargin(30*time.Millisecond))
	var (
		spyMu sync.Mutex
		calls []spied
	)
	for _, n := range c.nodes {
		n.t = spyTransport{transport: n.t, mu: &spyMu, calls: &calls}
	}
	ctx := context.Background()
	warm, err := c.TryLock(ctx, "warm", ttl) // loads the scripts: EVALSHA from now on
	require.NoError(t, err)
	require.NoError(t, warm.Extend(ctx, ttl))
	require.NoError(t, warm.Unlock(ctx))

	stops := make([]func() []monitored, len(servers))
	for i, s := range servers {
		stops[i] = monitor(t, s)
	}
	var (
		mu       sync.Mutex
		unlocked = map[string]time.Time{} // key -> when Unlock returned
		skipped  int
	)
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < iterations/concurrency; i++ {
				key := fmt.Sprintf("race-%d-%d", w, i)
				l, err := c.TryLock(ctx, key, ttl)
				if err == nil {
					err = l.KeepAlive() // fails if a busy machine made the acquisition slow
				}
				if err != nil {
					mu.Lock()
					skipped++
					mu.Unlock()
				}
				if l == nil {
					continue
				}
				// Anywhere within two renewal periods: often while one is in flight.
				time.Sleep(time.Duration(rand.Int64N(int64(2 * period))))
				l.Unlock(ctx)
				mu.Lock()
				unlocked[key] = time.Now()
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	require.Less(t, skipped, iterations/4, "too many attempts failed to make the race meaningful")

	// Let release stragglers land, then check that script traffic has stopped.
	time.Sleep(100 * time.Millisecond)
	before := make([]int64, len(servers))
	for i, s := range servers {
		before[i] = evalCalls(t, s)
	}
	time.Sleep(3 * period)
	for i, s := range servers {
		assert.Equal(t, before[i], evalCalls(t, s), "script calls on %s after every lock was unlocked", s.Addr)
		n, err := redis.Int(s.Do("DBSIZE"))
		require.NoError(t, err)
		assert.Zero(t, n, "keys left on %s", s.Addr)
	}

	// Client side.
	renewed := map[string]bool{}
	spyMu.Lock()
	for _, call := range calls {
		for _, k := range call.keys {
			end, ok := unlocked[k]
			if !ok {
				continue // the warm-up key
			}
			renewed[k] = true
			if !call.end.Before(end) {
				t.Errorf("renewal of %s ran from %v to %v, Unlock returned at %v", k, call.start, call.end, end)
			}
		}
	}
	spyMu.Unlock()

	// Server side.
	extendSHA, releaseSHA := extendScript.Hash(), releaseScript.Hash()
	for i := range servers {
		released := map[string]time.Time{}
		for _, m := range stops[i]() {
			switch m.sha {
			case releaseSHA:
				for _, k := range m.keys {
					if _, ok := released[k]; !ok {
						released[k] = m.at
					}
				}
			case extendSHA:
				for _, k := range m.keys {
					end, ok := unlocked[k]
					if !ok {
						continue
					}
					if at, ok := released[k]; ok {
						t.Errorf("node %s: renewal of %s at %v after its release at %v", servers[i].Addr, k, m.at, at)
					}
					if m.at.After(end) {
						t.Errorf("node %s: renewal of %s at %v after Unlock returned at %v", servers[i].Addr, k, m.at, end)
					}
				}
			}
		}
	}
	t.Logf("%d of %d locks renewed at least once before Unlock; %d attempts skipped", len(renewed), iterations, skipped)
	assert.Greater(t, len(renewed), iterations/4, "the race needs renewals in flight")
}

func TestWatchdogBadInput(t *testing.T) {
	_, c := cluster(t, 1)
	ctx := context.Background()
	assert.ErrorContains(t, c.Do(ctx, "k", time.Second, nil), "nil fn")
	assert.ErrorContains(t, c.Do(ctx, "k", 200*time.Millisecond, func(context.Context, *Lock) error { return nil }), "too short for auto-extension")
	assert.ErrorContains(t, c.Do(ctx, "", time.Second, func(context.Context, *Lock) error { return nil }), "empty key")
	var nilClient *Client
	assert.ErrorContains(t, nilClient.Do(ctx, "k", time.Second, func(context.Context, *Lock) error { return nil }), "nil *Client")
	l := mustLock(t, c, "short", 200*time.Millisecond)
	assert.ErrorContains(t, l.KeepAlive(), "too short for auto-extension")
	l.Unlock(ctx)
	assert.ErrorContains(t, (&Lock{}).KeepAlive(), "nil or zero *Lock")
	_, err := Dial([]string{"h:1"}, WithLossMargin(0))
	assert.ErrorContains(t, err, "WithLossMargin")
	_, err = Dial([]string{"h:1"}, WithMaxHold(-time.Second))
	assert.ErrorContains(t, err, "WithMaxHold")
	// A smaller explicit margin admits a shorter TTL.
	c2, err := Dial([]string{"h:1"}, WithLossMargin(20*time.Millisecond))
	require.NoError(t, err)
	defer c2.Close()
	assert.NoError(t, c2.checkKeepAlive("Do", 200*time.Millisecond))
}
