package redlock

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redlockgo/redlock/internal/checker"
)

// minorityNemesis repeatedly takes a random minority of nodes down, by
// SIGKILL (followed by an immediate restart without data: the restart guard
// keeps the node out of quorums) or SIGSTOP/SIGCONT, until ctx ends. A
// restarted node stays counted as down for its guard window, so that at most
// a minority is ever unavailable.
func (c *chaos) minorityNemesis(ctx context.Context) {
	n := len(c.servers)
	minority := n - quorum(n)
	window := c.cfg.ttl + drift(c.cfg.ttl, DefaultDriftFactor) + 300*time.Millisecond
	recovering := make([]time.Time, n)
	for ctx.Err() == nil {
		var free []int
		busy := 0
		for i := range c.servers {
			if time.Now().Before(recovering[i]) {
				busy++
			} else {
				free = append(free, i)
			}
		}
		k := minority - busy
		if k <= 0 {
			sleepCtx(ctx, 50*time.Millisecond)
			continue
		}
		k = 1 + c.rng.IntN(k)
		c.rng.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
		victims := free[:k]
		kill := c.rng.IntN(2) == 0
		down := c.between(150*time.Millisecond, 600*time.Millisecond)
		c.faultOn()
		for _, v := range victims {
			if kill {
				c.servers[v].Kill()
			} else {
				c.servers[v].Pause()
			}
		}
		sleepCtx(context.Background(), down) // always heal after the whole fault
		for _, v := range victims {
			if kill {
				require.NoError(c.t, c.servers[v].Restart())
				recovering[v] = time.Now().Add(window)
			} else {
				c.servers[v].Resume()
			}
		}
		if kill {
			// The guard keeps the restarted nodes out: still a fault.
			sleepCtx(context.Background(), window)
		}
		c.faultOff()
		sleepCtx(ctx, c.between(50*time.Millisecond, 300*time.Millisecond))
	}
}

// TestChaosMinorityKillPause: a minority killed (and restarted empty) or
// paused, over and over, while 8 workers over 2 Clients contend on 3 keys.
// Invariant: no overlap, no lost update, no key left; acquisitions continue.
func TestChaosMinorityKillPause(t *testing.T) {
	c := newChaos(t, chaosConfig{})
	r := c.runScenario(c.minorityNemesis)
	requireSafe(t, r)
	assert.Positive(t, r.UnderFault, "handoffs happened while nodes were down")
	// Liveness: with a majority always up, grants never stop for long. A
	// key left on a paused node delays its next holder by at most one TTL.
	c.requireLive(r)
}

// TestChaosMajorityDown: with a majority killed or paused there is no grant
// at all, and TryLock's error arrives within about one per-node timeout,
// matches ErrQuorumUnreachable and names every failed node.
func TestChaosMajorityDown(t *testing.T) {
	for _, how := range []string{"killed", "paused"} {
		t.Run(how, func(t *testing.T) {
			// A per-node timeout with room for a loaded machine: a live node
			// that misses it would be named too.
			timeout := 300 * time.Millisecond
			c := newChaos(t, chaosConfig{opts: []Option{WithNodeTimeout(timeout)}})
			ttl := c.cfg.ttl
			c.warm()
			down := []int{0, 2, 4}
			for _, i := range down {
				if how == "killed" {
					c.servers[i].Kill()
				} else {
					c.servers[i].Pause()
				}
			}
			cl := c.clients[0]
			var worst time.Duration
			for i := 0; i < 5; i++ {
				start := time.Now()
				// A key of its own each time: a release after a miss may still
				// be in flight on a live node (for k0 or an earlier probe),
				// and a "no" vote would decide before every failure is known.
				_, err := cl.TryLock(context.Background(), fmt.Sprintf("probe%d", i), ttl)
				took := time.Since(start)
				worst = max(worst, took)
				require.Error(t, err)
				assert.ErrorIs(t, err, ErrNotObtained)
				assert.ErrorIs(t, err, ErrQuorumUnreachable)
				named := failedNodes(err)
				for _, i := range down {
					assert.Contains(t, named, cl.proxies[i].Addr(), "the error names node %d", i)
				}
				assert.Len(t, named, len(down), "only the failed nodes are named: %v", err)
			}
			// ≥5× slack over the ~1 timeout measured, for a loaded machine.
			assert.Less(t, worst, 5*timeout+500*time.Millisecond, "TryLock's error took %v with a per-node timeout of %v", worst, timeout)
			t.Logf("chaos %s: time to error with a majority %s: worst %v of 5 (per-node timeout %v)", t.Name(), how, worst.Round(time.Millisecond), timeout)

			before := len(c.grants)
			c.work(ctxFor(min(chaosDuration(t), 2*time.Second)))
			assert.Equal(t, before, len(c.grants), "no grant at all with a majority down")
			r := c.judge(0, c.since())
			c.quiesce(&r)
			c.log(r)
			requireSafe(t, r)
		})
	}
}

// failedNodes returns the addresses of the *NodeErrors in err.
func failedNodes(err error) []string {
	var out []string
	var walk func(error)
	walk = func(e error) {
		if ne, ok := e.(*NodeError); ok {
			out = append(out, ne.Addr)
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, c := range u.Unwrap() {
				walk(c)
			}
		case interface{ WrappedErrors() []error }:
			for _, c := range u.WrappedErrors() {
				walk(c)
			}
		}
	}
	walk(err)
	sort.Strings(out)
	return out
}

func ctxFor(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	_ = cancel // released when the deadline passes
	return ctx
}

// TestChaosDelayedRestart: a minority node killed and restarted without its
// data only after more than the longest TTL (the Redis documentation's
// "delayed restart"), with the restart guard off so that only the delay
// protects. Invariant: 0 violations.
func TestChaosDelayedRestart(t *testing.T) {
	c := newChaos(t, chaosConfig{opts: []Option{WithoutRestartGuard()}})
	delay := c.cfg.ttl + drift(c.cfg.ttl, DefaultDriftFactor) + 200*time.Millisecond
	r := c.runScenario(func(ctx context.Context) {
		for ctx.Err() == nil {
			victims := c.rng.Perm(len(c.servers))[:1+c.rng.IntN(2)]
			c.faultOn()
			for _, v := range victims {
				c.servers[v].Kill()
			}
			sleepCtx(context.Background(), delay)
			for _, v := range victims {
				require.NoError(t, c.servers[v].Restart())
			}
			c.faultOff()
			sleepCtx(ctx, c.between(50*time.Millisecond, 300*time.Millisecond))
		}
	})
	requireSafe(t, r)
	assert.Positive(t, r.UnderFault)
}

// bareMajority is the targeted nemesis's set-up: it makes the nodes outside
// set unavailable for key by holding the key there under a foreign token for
// block, so that the next holder gets exactly the nodes in set, checks by
// looking the key up on every node that the holder's lock lives on exactly
// that bare majority (retrying the set-up if a loaded machine let a foreign
// key expire too early), waits until the foreign keys are gone and returns
// the lock and its grant instant.
func (c *chaos) bareMajority(cl *chaosClient, key string, set []int, block time.Duration) (*Lock, time.Duration) {
	t := c.t
	in := map[int]bool{}
	for _, i := range set {
		in[i] = true
	}
	name := chaosPrefix + key
	var why error
	for try := 0; ; try++ {
		require.Less(t, try, 10, "could not force the holder onto a bare majority: %v", why)
		for i, s := range c.servers {
			// Lock calls the warm-up cancelled may have left queue entries
			// that keep the free key for them (TryLock is refused) until
			// they expire, later still on a node whose clock runs slow.
			_, err := s.Do("DEL", waitersKey(name), waitExpiryKey(name))
			require.NoError(t, err)
			if !in[i] {
				_, err := s.Do("SET", name, "nemesis", "PX", block.Milliseconds())
				require.NoError(t, err)
			}
		}
		l, err := cl.TryLock(context.Background(), key, c.cfg.ttl)
		if err != nil {
			why = err
			time.Sleep(block)
			continue
		}
		grant := c.since()
		// The acquire may still be landing on the last nodes of the set.
		ok := assert.Eventually(&quietT{}, func() bool { return equalInts(c.holders(name, l.Token()), set) }, block/2, time.Millisecond)
		if !ok {
			why = fmt.Errorf("the lock landed on nodes %v", c.holders(name, l.Token()))
			_ = l.Unlock(context.Background())
			time.Sleep(block)
			continue
		}
		require.Eventually(t, func() bool {
			for i, s := range c.servers {
				if n, _ := redis.Int(s.Do("EXISTS", name)); !in[i] && n != 0 {
					return false
				}
			}
			return true
		}, 10*block, time.Millisecond)
		return l, grant
	}
}

// quietT absorbs assertion failures that are retried.
type quietT struct{}

func (quietT) Errorf(string, ...interface{}) {}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// contend makes cl try to take key until the holder's validity (until, on
// the harness clock) has passed, recording each critical section. It returns
// the instants at which cl got the lock. It probes with TryLock every few
// milliseconds rather than waiting in Lock: the negative controls must find
// the window in which a fault makes the lock unsafe, and Lock's wake-up time
// follows the nodes' reported TTLs, which a node with a fast clock overstates
// in real time (it may sleep past that window, which is safe for the waiter
// but would let a negative control pass unflagged).
func (c *chaos) contend(cl *chaosClient, key string, until time.Duration) []time.Duration {
	var got []time.Duration
	for c.since() < until {
		l, err := cl.TryLock(context.Background(), key, c.cfg.ttl)
		if err != nil {
			time.Sleep(2 * time.Millisecond)
			continue
		}
		grant := c.since()
		got = append(got, grant)
		cnt := c.counters[key]
		v := cnt.Load()
		cnt.Store(v + 1)
		c.record(key, checker.Hold{Holder: l.Token(), Grant: grant, End: c.since(), Until: cl.until(l.Until()).Sub(c.epoch)},
			checker.Increment{Holder: l.Token(), Read: v, Acked: true})
		_ = l.Unlock(context.Background())
	}
	return got
}

// holdUntilValidityEnds plays a careful holder of l: it reads the key's
// counter at once, keeps its critical section open almost to Until, and
// writes back only if still valid. It returns the hold and increment to
// record.
func (c *chaos) holdUntilValidityEnds(cl *chaosClient, l *Lock, key string, grant time.Duration) (checker.Hold, checker.Increment) {
	until := cl.until(l.Until()).Sub(c.epoch)
	cnt := c.counters[key]
	v := cnt.Load()
	time.Sleep(until - c.since() - 50*time.Millisecond)
	acked := c.since() < until
	if acked {
		cnt.Store(v + 1)
	}
	h := checker.Hold{Holder: l.Token(), Grant: grant, End: c.since(), Until: until}
	_ = l.Unlock(context.Background())
	return h, checker.Increment{Holder: l.Token(), Read: v, Acked: acked}
}

// targeted runs the targeted nemesis: before() is applied, then Client 0
// is forced onto the bare majority {0,1,2} of key k0, after() is applied
// (typically a fault on node 2, one of the holder's nodes), and Client 1
// contends for k0 while the holder keeps its critical section open until
// just before its validity ends, reading the shared counter at the start and
// writing it at the end. It returns how many times the contender got k0
// during the holder's critical section, and the judged report.
func (c *chaos) targeted(before, after func()) (int, chaosReport) {
	c.warm()
	holder, contender := c.clients[0], c.clients[1]
	c.faultOn()
	if before != nil {
		before()
	}
	l, grant := c.bareMajority(holder, "k0", []int{0, 1, 2}, 300*time.Millisecond)
	if after != nil {
		after()
	}
	until := holder.until(l.Until()).Sub(c.epoch)
	done := make(chan []time.Duration)
	go func() { done <- c.contend(contender, "k0", until) }()
	h, inc := c.holdUntilValidityEnds(holder, l, "k0", grant)
	c.record("k0", h, inc)
	stolen := 0
	for _, g := range <-done {
		if g < h.End {
			stolen++
		}
	}
	c.faultOff()
	r := c.judge(0, c.since())
	c.quiesce(&r)
	c.log(r)
	return stolen, r
}

// requireOutcome asserts a targeted run's expected outcome: caught by the
// checkers if it is a negative control (flagged), safe otherwise.
func requireOutcome(t *testing.T, flagged bool, stolen int, r chaosReport) {
	t.Helper()
	if flagged {
		requireFlagged(t, stolen, r)
		return
	}
	assert.Zero(t, stolen, "no second holder while the holder was valid")
	requireSafe(t, r)
}

// requireFlagged asserts that a negative control was caught by the checkers.
func requireFlagged(t *testing.T, stolen int, r chaosReport) {
	t.Helper()
	assert.Positive(t, stolen, "the contender got the lock while the holder was valid")
	assert.Positive(t, r.Violations, "negative control: the mutual-exclusion checker must flag it")
	assert.False(t, r.lost["k0"].OK(), "negative control: the lost-update checker must flag it")
}

// TestChaosNegativeImmediateRestart is the targeted nemesis for restarts:
// node 2 of the holder's bare majority restarts empty at once. With the
// restart guard off the checkers MUST flag it (a second holder on {2,3,4});
// with the guard on (the default) the run is safe.
func TestChaosNegativeImmediateRestart(t *testing.T) {
	for _, guard := range []bool{false, true} {
		t.Run(fmt.Sprintf("guard=%v", guard), func(t *testing.T) {
			var opts []Option
			if !guard {
				opts = append(opts, WithoutRestartGuard())
			}
			c := newChaos(t, chaosConfig{ttl: 2 * time.Second, opts: opts})
			stolen, r := c.targeted(nil, func() { require.NoError(t, c.servers[2].Restart()) })
			requireOutcome(t, !guard, stolen, r) // with the guard, the restarted node is kept out
		})
	}
}

// TestChaosNegativePausedClient: a holder paused past its validity (a GC
// pause, a stopped VM) writes without checking: without fencing the stale
// write is detected. The lock itself is not at fault (no violation): the
// overrun is reported, with the holder it overlapped, and both the
// lost-update checker and the fenced-resource checker (with grant-order
// sequence numbers as tokens, accepted by an unfenced resource) flag it.
func TestChaosNegativePausedClient(t *testing.T) {
	c := newChaos(t, chaosConfig{ttl: 300 * time.Millisecond})
	a, b := c.clients[0], c.clients[1]
	la, err := a.TryLock(context.Background(), "k0", c.cfg.ttl)
	require.NoError(t, err)
	ga := c.since()
	untilA := a.until(la.Until()).Sub(c.epoch)
	v := c.counters["k0"].Load()
	var writes []checker.Write // the resource's log, in the order it applied writes

	time.Sleep(untilA - c.since() + 50*time.Millisecond) // the pause: past validity

	// Meanwhile B was granted the lock (after A's validity), and writes.
	lb, err := b.Lock(ctxFor(5*time.Second), "k0", c.cfg.ttl)
	require.NoError(t, err)
	gb := c.since()
	vb := c.counters["k0"].Load()
	c.counters["k0"].Store(vb + 1)
	writes = append(writes, checker.Write{Holder: lb.Token(), Token: 2, Accepted: true})
	// A wakes up and writes its stale value, unchecked.
	c.counters["k0"].Store(v + 1)
	writes = append(writes, checker.Write{Holder: la.Token(), Token: 1, Accepted: true})
	ea := c.since()
	require.NoError(t, lb.Unlock(context.Background()))
	c.record("k0", checker.Hold{Holder: lb.Token(), Grant: gb, End: c.since(), Until: b.until(lb.Until()).Sub(c.epoch)}, checker.Increment{Holder: lb.Token(), Read: vb, Acked: true})
	c.record("k0", checker.Hold{Holder: la.Token(), Grant: ga, End: ea, Until: untilA}, checker.Increment{Holder: la.Token(), Read: v, Acked: true})

	r := c.judge(0, c.since())
	c.quiesce(&r)
	c.log(r)
	assert.Zero(t, r.Violations, "the lock granted B only after A's validity")
	require.Len(t, r.overruns, 1, "A's overrun is reported")
	require.NotNil(t, r.overruns[0].Next)
	assert.Equal(t, lb.Token(), r.overruns[0].Next.Holder)
	assert.False(t, r.lost["k0"].OK(), "negative control: the lost update must be flagged")
	assert.Len(t, checker.StaleWrites(writes), 1, "negative control: an unfenced resource accepted the stale write")
	assert.Empty(t, checker.FencingOrder([]checker.Grant{{Holder: la.Token(), At: ga, Token: 1}, {Holder: lb.Token(), At: gb, Token: 2}}))
	// A fenced resource would have rejected it.
	fenced := []checker.Write{writes[0], {Holder: la.Token(), Token: 1, Accepted: false}}
	assert.Empty(t, checker.StaleWrites(fenced))
}
