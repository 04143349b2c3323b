package redlock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redlockgo/redlock/internal/redistest"
)

// recorder keeps every event it observes, in order.
type recorder struct {
	mu     sync.Mutex
	events []any
}

func (r *recorder) add(e any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) observer() Observer {
	return Observer{
		Acquire: func(e AcquireEvent) { r.add(e) },
		Extend:  func(e ExtendEvent) { r.add(e) },
		Unlock:  func(e UnlockEvent) { r.add(e) },
		End:     func(e EndEvent) { r.add(e) },
	}
}

// take returns the events so far and forgets them.
func (r *recorder) take() []any {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev := r.events
	r.events = nil
	return ev
}

func addrsOf(nodes []NodeVote) []string {
	var a []string
	for _, n := range nodes {
		a = append(a, n.Addr)
	}
	return a
}

func countVotes(nodes []NodeVote, v Vote) int {
	k := 0
	for _, n := range nodes {
		if n.Vote == v {
			k++
		}
	}
	return k
}

// TestObserveGrantExtendUnlock checks the exact events of a grant, an
// Extend and an Unlock.
func TestObserveGrantExtendUnlock(t *testing.T) {
	var rec recorder
	servers, c := cluster(t, 3, WithObserver(rec.observer()))
	ctx := context.Background()
	const ttl = 5 * time.Second

	l, err := c.TryLock(ctx, "k", ttl)
	require.NoError(t, err)
	ev := rec.take()
	require.Len(t, ev, 1)
	acq, ok := ev[0].(AcquireEvent)
	require.True(t, ok, "%T", ev[0])
	assert.Equal(t, "k", acq.Key)
	assert.Equal(t, ttl, acq.TTL)
	assert.Equal(t, OutcomeOK, acq.Outcome)
	assert.NoError(t, acq.Err)
	assert.Greater(t, acq.Elapsed, time.Duration(0))
	assert.Greater(t, acq.Validity, time.Duration(0))
	assert.LessOrEqual(t, acq.Validity, ttl-acq.Elapsed)
	assert.Equal(t, redistest.Addrs(servers), addrsOf(acq.Nodes))
	assert.GreaterOrEqual(t, countVotes(acq.Nodes, VoteYes), 2)
	assert.Zero(t, countVotes(acq.Nodes, VoteFailed))
	for _, n := range acq.Nodes {
		if n.Vote == VoteYes {
			assert.Greater(t, n.Latency, time.Duration(0), "node %s", n.Addr)
		}
	}

	require.NoError(t, l.Extend(ctx, 2*ttl))
	ev = rec.take()
	require.Len(t, ev, 1)
	ext, ok := ev[0].(ExtendEvent)
	require.True(t, ok, "%T", ev[0])
	assert.Equal(t, "k", ext.Key)
	assert.False(t, ext.Renewal)
	assert.Equal(t, OutcomeOK, ext.Outcome)
	assert.Greater(t, ext.Validity, ttl, "validity after extending to 2×ttl")
	assert.GreaterOrEqual(t, countVotes(ext.Nodes, VoteYes), 2)

	time.Sleep(10 * time.Millisecond)
	require.NoError(t, l.Unlock(ctx))
	ev = rec.take()
	require.Len(t, ev, 2, "End, then Unlock")
	end, ok := ev[0].(EndEvent)
	require.True(t, ok, "%T", ev[0])
	assert.Equal(t, "k", end.Key)
	assert.False(t, end.Lost)
	assert.ErrorIs(t, end.Err, ErrLockLost, "released by Unlock")
	un, ok := ev[1].(UnlockEvent)
	require.True(t, ok, "%T", ev[1])
	assert.Equal(t, OutcomeOK, un.Outcome)
	assert.NoError(t, un.Err)
	assert.GreaterOrEqual(t, un.Held, 10*time.Millisecond)
	assert.GreaterOrEqual(t, countVotes(un.Nodes, VoteYes), 2)
}

// TestObserveMissKilledNodes: an attempt with a majority killed is reported
// unreachable, each killed node failed with a NodeError naming it.
func TestObserveMissKilledNodes(t *testing.T) {
	var rec recorder
	servers, c := cluster(t, 3, WithObserver(rec.observer()), WithNodeTimeout(200*time.Millisecond))
	ctx := context.Background()
	servers[0].Kill()
	servers[2].Kill()

	_, err := c.TryLock(ctx, "k", time.Second)
	require.ErrorIs(t, err, ErrQuorumUnreachable)
	ev := rec.take()
	require.Len(t, ev, 1)
	acq := ev[0].(AcquireEvent)
	assert.Equal(t, OutcomeUnreachable, acq.Outcome)
	assert.Equal(t, err, acq.Err)
	assert.Zero(t, acq.Validity)
	for _, i := range []int{0, 2} {
		n := acq.Nodes[i]
		assert.Equal(t, servers[i].Addr, n.Addr)
		require.Equal(t, VoteFailed, n.Vote, "killed node %s", n.Addr)
		var ne *NodeError
		require.ErrorAs(t, n.Err, &ne)
		assert.Equal(t, servers[i].Addr, ne.Addr)
	}
	assert.NotEqual(t, VoteFailed, acq.Nodes[1].Vote, "the live node")
	assert.Nil(t, acq.Nodes[1].Err)

	// Contended, with the killed node reported if its failure was awaited.
	require.NoError(t, servers[0].Restart())
	other := dial(t, servers[:2])
	l, err := other.TryLock(ctx, "k", 5*time.Second)
	require.NoError(t, err)
	defer l.Unlock(ctx)
	_, err = c.TryLock(ctx, "k", time.Second)
	require.ErrorIs(t, err, ErrNotObtained)
	ev = rec.take()
	require.Len(t, ev, 1)
	acq = ev[0].(AcquireEvent)
	assert.Equal(t, OutcomeContended, acq.Outcome)
	// Decided by two of: the holder's two refusals, the killed node's failure.
	for _, n := range acq.Nodes[:2] {
		assert.Contains(t, []Vote{VoteNo, VotePending}, n.Vote, n.Addr)
	}
	assert.GreaterOrEqual(t, countVotes(acq.Nodes, VoteNo), 1)
	assert.Equal(t, 2, countVotes(acq.Nodes, VoteNo)+countVotes(acq.Nodes, VoteFailed))
	if acq.Nodes[2].Vote == VoteFailed {
		assert.ErrorContains(t, acq.Nodes[2].Err, servers[2].Addr)
	} else {
		assert.Equal(t, VotePending, acq.Nodes[2].Vote)
	}
}

// TestObserveRenewalFailureAndLoss: with a majority killed during Do, the
// renewals are reported failed (unreachable, naming the killed nodes), then
// one End event reports the loss, and Do's release is reported.
func TestObserveRenewalFailureAndLoss(t *testing.T) {
	var rec recorder
	servers, c := cluster(t, 5, WithObserver(rec.observer()), WithNodeTimeout(100*time.Millisecond))
	ctx := context.Background()
	const ttl = time.Second
	err := c.Do(ctx, "k", ttl, func(fctx context.Context, l *Lock) error {
		first := l.Until()
		for !l.Until().After(first) { // a renewal succeeded
			time.Sleep(5 * time.Millisecond)
		}
		for _, s := range servers[:3] {
			s.Kill()
		}
		select {
		case <-fctx.Done():
		case <-time.After(5 * ttl):
			t.Error("fn's context was not cancelled")
		}
		return nil
	})
	require.ErrorIs(t, err, ErrLockLost)

	// The End event follows the cancellation of fn's context (see
	// Observer.End), so it may come before or after Do's release.
	var ev []any
	require.Eventually(t, func() bool {
		ev = append(ev, rec.take()...)
		return hasEvent[EndEvent](ev)
	}, 5*time.Second, time.Millisecond)
	require.GreaterOrEqual(t, len(ev), 5, "%v", ev)
	require.IsType(t, AcquireEvent{}, ev[0])
	assert.Equal(t, OutcomeOK, ev[0].(AcquireEvent).Outcome)
	var ok, failed int
	var ends []EndEvent
	var unlocks []UnlockEvent
	for i, e := range ev[1:] {
		switch e := e.(type) {
		case ExtendEvent:
			assert.True(t, e.Renewal)
			assert.Empty(t, ends, "no renewal reported after the loss (event %d)", i+1)
			assert.Empty(t, unlocks, "no renewal reported after the release (event %d)", i+1)
			if e.Outcome == OutcomeOK {
				assert.Zero(t, failed, "a renewal succeeded after one failed")
				ok++
				continue
			}
			failed++
			assert.Equal(t, OutcomeUnreachable, e.Outcome)
			assert.ErrorIs(t, e.Err, ErrQuorumUnreachable)
			for _, n := range e.Nodes[:3] {
				if n.Vote != VotePending {
					assert.Equal(t, VoteFailed, n.Vote, n.Addr)
					assert.ErrorContains(t, n.Err, n.Addr)
				}
			}
		case EndEvent:
			ends = append(ends, e)
		case UnlockEvent:
			unlocks = append(unlocks, e)
		default:
			t.Errorf("unexpected event %d: %#v", i+1, e)
		}
	}
	assert.GreaterOrEqual(t, ok, 1)
	assert.GreaterOrEqual(t, failed, 1)
	require.Len(t, ends, 1)
	assert.True(t, ends[0].Lost)
	assert.ErrorIs(t, ends[0].Err, ErrLockLost)
	assert.Contains(t, ends[0].Err.Error(), "loss deadline")
	require.Len(t, unlocks, 1)
	assert.NotEqual(t, OutcomeOK, unlocks[0].Outcome)
}

// hasEvent reports whether ev holds an event of type E.
func hasEvent[E any](ev []any) bool {
	for _, e := range ev {
		if _, ok := e.(E); ok {
			return true
		}
	}
	return false
}

// TestObserveRenewalFindsLockGone: a renewal refused by every node is
// reported lost, and the loss follows.
func TestObserveRenewalFindsLockGone(t *testing.T) {
	var rec recorder
	servers, c := cluster(t, 3, WithObserver(rec.observer()))
	const ttl = 3 * time.Second
	l := mustLock(t, c, "k", ttl)
	require.NoError(t, l.KeepAlive())
	dropEverywhere(t, servers, l)
	select {
	case <-l.Done():
	case <-time.After(5 * ttl):
		t.Fatal("Done not closed")
	}
	// The End event follows Done's close (see Observer.End).
	var ev []any
	require.Eventually(t, func() bool { ev = append(ev, rec.take()...); return hasEvent[EndEvent](ev) }, 5*time.Second, time.Millisecond)
	require.Len(t, ev, 3, "%#v", ev)
	ext := ev[1].(ExtendEvent)
	assert.True(t, ext.Renewal)
	assert.Equal(t, OutcomeLost, ext.Outcome)
	assert.GreaterOrEqual(t, countVotes(ext.Nodes, VoteNo), 2)
	end := ev[2].(EndEvent)
	assert.True(t, end.Lost)
	assert.Equal(t, ext.Err, end.Err)
}

// TestObserverChain: several observers each get every event, in option order.
func TestObserverChain(t *testing.T) {
	var order []string
	var mu sync.Mutex
	obs := func(name string) Observer {
		return Observer{Acquire: func(AcquireEvent) { mu.Lock(); order = append(order, name); mu.Unlock() }}
	}
	_, c := cluster(t, 1, WithObserver(obs("a")), WithObserver(Observer{}), WithObserver(obs("b")))
	l, err := c.TryLock(context.Background(), "k", time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Unlock(context.Background()))
	assert.Equal(t, []string{"a", "b"}, order)
}

// TestSlogObserver checks levels and that neither passwords nor tokens are
// logged.
func TestSlogObserver(t *testing.T) {
	servers := redistest.Start(t, 3, "--requirepass", "s3cret")
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	urls := []string{"redis://:s3cret@" + servers[0].Addr, "redis://:s3cret@" + servers[1].Addr, "redis://:wr0ng-s3cret@" + servers[2].Addr}
	c, err := Dial(urls, WithObserver(SlogObserver(logger)))
	require.NoError(t, err)
	defer c.Close()
	ctx := context.Background()
	l, err := c.TryLock(ctx, "k", 2*time.Second)
	require.NoError(t, err)
	l.acq.waitAll() // the bad node's failure is logged with the grant only if awaited
	require.NoError(t, l.Unlock(ctx))
	servers[1].Kill()
	_, err = c.TryLock(ctx, "k", 2*time.Second)
	require.ErrorIs(t, err, ErrQuorumUnreachable)

	out := buf.String()
	assert.NotContains(t, out, "s3cret")
	assert.NotContains(t, out, l.Token())
	type record struct {
		Level, Msg, Key, Node, Outcome, Error string
	}
	var recs []record
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r record
		require.NoError(t, json.Unmarshal([]byte(line), &r), line)
		recs = append(recs, r)
	}
	has := func(level, msg, node string) bool {
		for _, r := range recs {
			if r.Level == level && r.Msg == msg && (node == "" || r.Node == node) {
				return true
			}
		}
		return false
	}
	assert.True(t, has("DEBUG", "redlock: lock acquired", ""), out)
	assert.True(t, has("DEBUG", "redlock: lock released", ""), out)
	assert.True(t, has("DEBUG", "redlock: lock ended", ""), out)
	assert.True(t, has("WARN", "redlock: node error", servers[1].Addr), out)
	assert.True(t, has("WARN", "redlock: lock not obtained", ""), out)
	for _, r := range recs {
		if r.Msg == "redlock: node error" && r.Node == servers[2].Addr {
			assert.Contains(t, r.Error, "WRONGPASS")
		}
		assert.True(t, strings.HasPrefix(r.Msg, "redlock: "), r.Msg)
	}

	// At Info, grants are not logged at all.
	buf.Reset()
	quiet := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	_, c2 := cluster(t, 1, WithObserver(SlogObserver(quiet)))
	l2, err := c2.TryLock(ctx, "k", time.Second)
	require.NoError(t, err)
	require.NoError(t, l2.Unlock(ctx))
	assert.Empty(t, buf.String())
}

func TestOutcomeAndVoteStrings(t *testing.T) {
	assert.Equal(t, "ok", OutcomeOK.String())
	assert.Equal(t, "lost", OutcomeLost.String())
	assert.Equal(t, "Outcome(42)", Outcome(42).String())
	assert.Equal(t, "failed", VoteFailed.String())
	assert.Equal(t, "pending", VotePending.String())
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.Equal(t, OutcomeCancelled, outcomeOf(cctx, errors.Join(ErrNotObtained, context.Canceled)))
	assert.Equal(t, OutcomeContended, outcomeOf(context.Background(), ErrNotObtained))
	assert.Equal(t, OutcomeError, outcomeOf(context.Background(), errors.Join(ErrNotObtained, ErrClosed)))
}

// TestObserveNodeEvents: an evicting policy and a restart are reported as
// node events; with an observer taking them, the default slog warning is
// not also logged, and an explicit WithEvictionWarning still runs.
func TestObserveNodeEvents(t *testing.T) {
	servers := redistest.Start(t, 3)
	_, err := servers[0].Do("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
	require.NoError(t, err)
	var buf bytes.Buffer
	old, w, flags := slog.Default(), log.Writer(), log.Flags()
	defer func() { slog.SetDefault(old); log.SetOutput(w); log.SetFlags(flags) }()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, nil)))

	var mu sync.Mutex
	var events []NodeEvent
	var warned []string
	obs := Observer{Node: func(e NodeEvent) { mu.Lock(); events = append(events, e); mu.Unlock() }}
	c := dial(t, servers, WithObserver(obs), WithEvictionWarning(func(addr, policy string) {
		mu.Lock()
		warned = append(warned, addr+" "+policy)
		mu.Unlock()
	}))
	plain := dial(t, servers, WithObserver(obs)) // no WithEvictionWarning: no default warning either
	ctx := context.Background()
	for _, cl := range []*Client{c, plain} {
		for range 2 {
			l, err := cl.TryLock(ctx, "k", time.Second)
			require.NoError(t, err)
			require.NoError(t, l.Unlock(ctx))
		}
	}
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(events) == 2 }, 5*time.Second, time.Millisecond)
	mu.Lock()
	for _, e := range events {
		assert.Equal(t, NodeEvent{Addr: servers[0].Addr, Kind: NodeEvictionRisk, Detail: "allkeys-lru"}, e)
	}
	assert.Equal(t, []string{servers[0].Addr + " allkeys-lru"}, warned)
	events = nil
	mu.Unlock()
	assert.NotContains(t, buf.String(), "maxmemory", "the observer took the default warning's place")

	require.NoError(t, servers[1].Restart())
	require.Eventually(t, func() bool {
		if l, err := c.TryLock(ctx, "k", time.Second); err == nil {
			l.Unlock(ctx)
		}
		mu.Lock()
		defer mu.Unlock()
		return len(events) > 0
	}, 10*time.Second, 10*time.Millisecond)
	mu.Lock()
	assert.Equal(t, servers[1].Addr, events[0].Addr)
	assert.Equal(t, NodeRestarted, events[0].Kind)
	assert.Contains(t, events[0].Detail, "restarted")
	assert.Equal(t, "restarted", events[0].Kind.String())
	mu.Unlock()
}
