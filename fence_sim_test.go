//go:build go1.25

// synctest needs the Go 1.23 timer semantics; the module says go 1.22.
//go:debug asynctimerchan=0

package redlock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/require"
)

// The deterministic simulation of fencing. Simulated nodes (simNode, checked
// against redis-server by TestSimNodeMatchesRedis) are plugged into the
// library through the transport seam; the library's own Client runs
// unchanged: its fan-out, tally, validity arithmetic and minting. Everything
// runs in a synctest bubble, so time is virtual (the clock seam, per-node
// timeouts, TTLs and node clocks all read it) and, after every event, the
// scheduler waits until every goroutine is blocked. A seeded scheduler then
// picks the next event: deliver one pending script call to its node, lose the
// request, lose the reply after applying it, let time pass (client pauses,
// TTL and counter expiry), crash a node, restart it with or without its data.
// Calls are ordered by (client, node, script, sequence) before picking, so a
// seed replays the same schedule.

// simScenario is a family of schedules.
type simScenario struct {
	loss   bool          // restarts without data and short counter lifetimes
	offset time.Duration // the largest offset between node clocks
	guard  time.Duration // how long a node that lost its data stays down at least
	broken bool          // nodes run the broken variant (per-node INCR, no write-back)
}

type simCall struct {
	client, node int
	script       *script
	args         []interface{}
	key          string // sort key, for a deterministic order
	reply        chan simReply
}

type simReply struct {
	v   interface{}
	err error
}

type simWorld struct {
	sc      simScenario
	nodes   []*simNode
	up      []bool
	downAt  []time.Time
	offsets []time.Duration

	mu      sync.Mutex
	pending []*simCall
	calls   map[string]int // per client, node and script
	stamp   atomic.Int64   // logical time of client events
	grants  []simGrant
}

// simGrant is one granted lock: its fence and the logical times at which its
// TryLock was called and returned.
type simGrant struct {
	client     int
	start, end int64
	fence      uint64
}

type simTransport struct {
	w            *simWorld
	client, node int
}

var _ transport = (*simTransport)(nil)

func (t *simTransport) do(_ context.Context, cmd string, _ ...interface{}) (interface{}, error) {
	if cmd == "INFO" { // first contact: answered at once
		return fmt.Sprintf("run_id:sim%d\r\nrole:master\r\n", t.node), nil
	}
	return nil, fmt.Errorf("sim: unsupported command %s", cmd)
}

func (t *simTransport) conn(context.Context) (redis.Conn, error) {
	return nil, errors.New("sim: no subscriptions (TryLock only)")
}

func (t *simTransport) eval(ctx context.Context, s *script, keysAndArgs ...interface{}) (interface{}, error) {
	c := &simCall{client: t.client, node: t.node, script: s, args: keysAndArgs, reply: make(chan simReply, 1)}
	t.w.mu.Lock()
	// Not the arguments: tokens are random. Calls of one client to one node
	// with the same script are never issued concurrently, so their count is
	// deterministic.
	k := fmt.Sprintf("%03d %03d %s", t.client, t.node, scriptName(s))
	t.w.calls[k]++
	c.key = fmt.Sprintf("%s %06d", k, t.w.calls[k])
	t.w.pending = append(t.w.pending, c)
	t.w.mu.Unlock()
	select {
	case r := <-c.reply:
		return r.v, r.err
	case <-ctx.Done(): // the request stays in flight: the node may still apply it
		return nil, ctx.Err()
	}
}

func (t *simTransport) close() error { return nil }

var simDebug = false

var errSimLost = errors.New("sim: message lost")

// simClock is a client's clock seam: the bubble's virtual time, running at
// rate times its true speed since start. Rate 0 is a stopped clock, which
// makes the validity check useless: the fencing property must not care.
type simClock struct {
	start time.Time
	rate  float64
}

func (k simClock) Now() time.Time {
	return k.start.Add(time.Duration(float64(time.Since(k.start)) * k.rate))
}

const (
	simTTL      = 500 * time.Millisecond
	simAttempts = 4
)

// runSim runs one seeded schedule and returns the grants.
func runSim(t *testing.T, sc simScenario, seed uint64) []simGrant {
	var grants []simGrant
	synctest.Test(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(seed, 1))
		n := 3 + 2*rng.IntN(2)
		clients := 2 + rng.IntN(3)
		w := &simWorld{sc: sc, nodes: make([]*simNode, n), up: make([]bool, n), downAt: make([]time.Time, n), offsets: make([]time.Duration, n), calls: map[string]int{}}
		for i := range n {
			if sc.loss {
				w.offsets[i] = time.Duration(rng.Int64N(int64(sc.offset) + 1))
			} else { // any offset at all: no clock assumption is needed
				w.offsets[i] = time.Duration(rng.Int64N(int64(2*time.Hour))) - time.Hour
			}
			off := w.offsets[i]
			w.nodes[i] = newSimNode(func() time.Time { return time.Now().Add(off) })
			w.nodes[i].broken = sc.broken
			w.up[i] = true
		}
		opts := []Option{WithFencing(), WithNodeTimeout(simTTL / 3)}
		if sc.loss {
			opts = append(opts, WithFenceLifetime(MinFenceLifetime)) // counters expire during the run
		}
		epoch := time.Now()
		var done atomic.Int32
		for ci := range clients {
			nodes := make([]*node, n)
			for i := range nodes {
				nodes[i] = &node{addr: fmt.Sprintf("sim%d", i), t: &simTransport{w: w, client: ci, node: i}}
			}
			// Client clocks at any rate, even stopped: no timing assumption.
			rate := []float64{1, 1, 0.25, 0}[rng.IntN(4)]
			c, err := newClient(nodes, append(opts, withClock(simClock{start: epoch, rate: rate})))
			require.NoError(t, err)
			crng := rand.New(rand.NewPCG(seed, uint64(100+ci)))
			go func() {
				defer done.Add(1)
				defer c.Close()
				ctx := context.Background()
				for range simAttempts {
					time.Sleep(time.Duration(crng.IntN(300)) * time.Millisecond)
					start := w.stamp.Add(1)
					l, err := c.TryLock(ctx, "k", simTTL)
					end := w.stamp.Add(1)
					if err != nil {
						if simDebug {
							fmt.Println("MISS", err)
						}
						continue
					}
					w.mu.Lock()
					w.grants = append(w.grants, simGrant{client: ci, start: start, end: end, fence: l.Fence()})
					w.mu.Unlock()
					time.Sleep(time.Duration(crng.IntN(2*int(simTTL/time.Millisecond))) * time.Millisecond) // may outlive validity
					if crng.IntN(4) != 0 {
						l.Unlock(ctx)
					}
				}
			}()
		}

		for step := 0; ; step++ {
			synctest.Wait()
			if int(done.Load()) == clients {
				break
			}
			require.Less(t, step, 200000, "seed %d: the schedule does not end", seed)
			w.mu.Lock()
			sort.Slice(w.pending, func(i, j int) bool { return w.pending[i].key < w.pending[j].key })
			pending := len(w.pending)
			w.mu.Unlock()
			switch r := rng.IntN(100); {
			case pending > 0 && r < 75:
				w.mu.Lock()
				i := rng.IntN(pending)
				c := w.pending[i]
				w.pending = append(w.pending[:i], w.pending[i+1:]...)
				w.mu.Unlock()
				w.deliver(c, rng.IntN(20))
			case r < 90 || pending == 0:
				d := time.Duration(rng.IntN(5)) * time.Millisecond
				if rng.IntN(100) == 0 { // a long pause: leases and counters may expire meanwhile
					d = time.Duration(rng.Int64N(int64(2 * simTTL)))
				}
				time.Sleep(d + time.Millisecond)
			case r < 92:
				i := rng.IntN(n)
				if w.up[i] {
					w.up[i], w.downAt[i] = false, time.Now()
				}
			default:
				i := w.downNode(rng.IntN(n))
				if i < 0 {
					break
				}
				if sc.loss && rng.IntN(2) == 0 {
					if time.Since(w.downAt[i]) <= sc.guard {
						break // the restart guard keeps it out a while longer
					}
					w.nodes[i].lose()
				}
				w.up[i] = true
			}
		}
		grants = w.grants
	})
	return grants
}

// downNode returns the first node at or after from that is down, or -1.
func (w *simWorld) downNode(from int) int {
	for k := range w.up {
		if i := (from + k) % len(w.up); !w.up[i] {
			return i
		}
	}
	return -1
}

// deliver acts on one call: how < 16 delivers it, 16–17 loses the request,
// 18–19 applies it and loses the reply.
func (w *simWorld) deliver(c *simCall, how int) {
	if how == 16 || how == 17 || !w.up[c.node] {
		c.reply <- simReply{err: errSimLost}
		return
	}
	v, err := w.nodes[c.node].run(c.script, c.args...)
	if how >= 18 {
		v, err = nil, errSimLost
	}
	c.reply <- simReply{v: v, err: err}
}

// checkFences checks the property of docs/fencing.md on a run's grants:
// tokens differ, and a lock whose TryLock started after another's returned
// has the larger token.
func checkFences(grants []simGrant) error {
	for i, a := range grants {
		for j, b := range grants {
			switch {
			case i == j:
			case a.fence == 0:
				return fmt.Errorf("grant %+v has no token", a)
			case i < j && a.fence == b.fence:
				return fmt.Errorf("two grants with token %d: %+v and %+v", a.fence, a, b)
			case a.end < b.start && b.fence <= a.fence:
				return fmt.Errorf("grant %+v started after %+v returned but has token %d <= %d", b, a, b.fence, a.fence)
			}
		}
	}
	return nil
}

func simSchedules(t *testing.T, full int) int {
	if testing.Short() {
		return full / 10
	}
	return full
}

// TestFenceSimulation explores schedules without data loss: any node clocks
// at all, crashes with restarts that keep the data, lost messages, lock
// expiry and client pauses. The property must hold in every schedule.
func TestFenceSimulation(t *testing.T) {
	sc := simScenario{}
	total := 0
	for seed := range uint64(simSchedules(t, 1500)) {
		g := runSim(t, sc, seed)
		total += len(g)
		require.NoError(t, checkFences(g), "seed %d", seed)
	}
	t.Logf("%d grants checked", total)
	require.Greater(t, total, simSchedules(t, 1500)/2, "the schedules grant locks")
}

// TestFenceSimulationWithLoss adds restarts without data and counters that
// expire during the run, under the clock assumption of docs/fencing.md: node
// clocks within 50 ms of each other, and a node that lost its data stays out
// for longer than that.
func TestFenceSimulationWithLoss(t *testing.T) {
	sc := simScenario{loss: true, offset: 50 * time.Millisecond, guard: 51 * time.Millisecond}
	total := 0
	for seed := range uint64(simSchedules(t, 1500)) {
		g := runSim(t, sc, seed)
		total += len(g)
		require.NoError(t, checkFences(g), "seed %d", seed)
	}
	t.Logf("%d grants checked", total)
}

// TestFenceSimulationCatchesBrokenVariant is the negative control: with the
// broken protocol (each node INCRs its counter, the client takes the max,
// nothing is written back) the same simulation must find a violation.
func TestFenceSimulationCatchesBrokenVariant(t *testing.T) {
	for seed := range uint64(2000) {
		if err := checkFences(runSim(t, simScenario{broken: true}, seed)); err != nil {
			t.Logf("seed %d: %v", seed, err)
			return
		}
	}
	t.Fatal("the simulation found no violation of the broken variant")
}

// TestFenceSimulationNeedsRestartGuard shows the clock assumption is needed:
// nodes that lose their data and rejoin at once, with clocks an hour apart,
// let tokens go backwards.
func TestFenceSimulationNeedsRestartGuard(t *testing.T) {
	for seed := range uint64(2000) {
		if err := checkFences(runSim(t, simScenario{loss: true, offset: time.Hour}, seed)); err != nil {
			t.Logf("seed %d: %v", seed, err)
			return
		}
	}
	t.Fatal("the simulation found no violation without the restart guard")
}

// TestFenceSimulationReplays: a seed replays the same schedule, so a failing
// seed can be debugged.
func TestFenceSimulationReplays(t *testing.T) {
	for seed := range uint64(simSchedules(t, 50)) {
		for _, sc := range []simScenario{{}, {loss: true, offset: 50 * time.Millisecond, guard: 51 * time.Millisecond}} {
			// The logical stamps and the order of grants are left out: two
			// clients woken at the same virtual instant run in either order.
			outcome := func(gs []simGrant) (o [][2]uint64) {
				for _, g := range gs {
					o = append(o, [2]uint64{uint64(g.client), g.fence})
				}
				sort.Slice(o, func(i, j int) bool { return o[i][0] < o[j][0] || o[i][0] == o[j][0] && o[i][1] < o[j][1] })
				return o
			}
			require.Equal(t, outcome(runSim(t, sc, seed)), outcome(runSim(t, sc, seed)), "seed %d, %+v", seed, sc)
		}
	}
}
