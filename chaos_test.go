package redlock

// The chaos harness: real redis-server processes, several Clients whose
// workers contend on a few keys, a shared counter incremented under the
// lock, nemeses that kill, pause, restart, partition and skew nodes, and the
// pure checkers of internal/checker judging the recorded history. The
// scenarios are in chaos_scenarios_test.go; docs/chaos.md describes them and
// records their figures.
//
// Tiers: by default every scenario runs for a short, bounded time (the
// "short tier", part of `go test ./...`). CHAOS_DURATION=10m runs each
// worker scenario for that long instead (the soak tier). CHAOS_SEED=n
// replays the nemesis schedule and the workers' key choices of a run (the
// operating system's scheduling is not replayed). CHAOS_REPORT=file appends
// one JSON line of figures per scenario to file.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redlockgo/redlock/internal/checker"
	"github.com/redlockgo/redlock/internal/faketime"
	"github.com/redlockgo/redlock/internal/faultproxy"
	"github.com/redlockgo/redlock/internal/redistest"
)

// chaosPrefix is the key prefix of every chaos worker, so that the cleanup
// check finds exactly the lock keys.
const chaosPrefix = "chaos:"

// chaosShort is the length of a worker scenario in the short tier.
const chaosShort = 4 * time.Second

// chaosDuration returns how long a worker scenario runs: CHAOS_DURATION if
// set (the soak tier), otherwise chaosShort.
func chaosDuration(t *testing.T) time.Duration {
	v := os.Getenv("CHAOS_DURATION")
	if v == "" {
		return chaosShort
	}
	d, err := time.ParseDuration(v)
	require.NoError(t, err, "CHAOS_DURATION")
	return d
}

// chaosSeed returns CHAOS_SEED or a fresh seed, and logs it so that any run
// can be replayed.
func chaosSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		require.NoError(t, err, "CHAOS_SEED")
		seed = s
	}
	t.Logf("chaos seed %d (replay with CHAOS_SEED=%d go test -run '^%s$' .)", seed, seed, t.Name())
	return seed
}

// chaosConfig shapes one scenario's cluster and workload.
type chaosConfig struct {
	nodes   int           // redis-server processes (default 5)
	clients int           // Clients, each with its own proxies and pools (default 2)
	workers int           // goroutines contending, spread over the Clients (default 8)
	keys    int           // distinct lock keys (default 3)
	ttl     time.Duration // lock TTL (default 1s)
	hold    time.Duration // pause between reading and writing the counter (default 2ms)
	opts    []Option      // extra options for every Client
	// clock, if set, gives Client i its clock (client-side drift); until
	// translates a Lock's Until on that clock into the harness's clock.
	clock func(i int) (clock, func(time.Time) time.Time)
	// shim starts every server under the clock shim (c.clocks[i] drives
	// server i's wall clock); the test skips, saying why, without gcc.
	shim bool
	// source, if set, makes Client i connect straight to the servers (no
	// proxy) from the loopback address source(i), through pools given to
	// New: the nftables tier tells Clients apart by source address.
	source func(i int) string
	// settle extends the cleanup check: with packet-level partitions,
	// commands dropped during a cut are retransmitted by TCP up to one
	// backed-off RTO after the heal (even on connections the Client has
	// closed), so keys can land — with their PX — after the Clients closed;
	// the check polls for up to settle more for them to expire.
	settle time.Duration
}

func (c *chaosConfig) defaults() {
	if c.nodes == 0 {
		c.nodes = 5
	}
	if c.clients == 0 {
		c.clients = 2
	}
	if c.workers == 0 {
		c.workers = 8
	}
	if c.keys == 0 {
		c.keys = 3
	}
	if c.ttl == 0 {
		c.ttl = time.Second
	}
	if c.hold == 0 {
		c.hold = 2 * time.Millisecond
	}
}

// chaosClient is one Client with the proxies its connections go through.
type chaosClient struct {
	*Client
	proxies []*faultproxy.Proxy // proxies[i] fronts server i for this Client only
	until   func(time.Time) time.Time
}

// chaos is one scenario's cluster, workload and recorded history.
type chaos struct {
	t       *testing.T
	cfg     chaosConfig
	seed    uint64
	rng     *rand.Rand // the nemesis's; workers have their own
	servers []*redistest.Server
	clocks  []*faketime.Control // with cfg.shim: server i's wall clock
	clients []*chaosClient
	keys    []string
	epoch   time.Time

	faults atomic.Int32 // faults active now: grants meanwhile count as "under fault"

	mu       sync.Mutex
	holds    []checker.Hold
	incs     map[string][]checker.Increment
	grants   []time.Duration
	underF   int
	calls    int // Lock calls made by workers
	wins     int // successful ones
	unreach  int // failed ones whose last attempt found the quorum unreachable
	counters map[string]*atomic.Int64
	windows  [][2]time.Duration // intervals with a fault active
	fstart   time.Duration
}

// newChaos starts the cluster and the Clients (not the workers).
func newChaos(t *testing.T, cfg chaosConfig) *chaos {
	cfg.defaults()
	seed := chaosSeed(t)
	c := &chaos{
		t: t, cfg: cfg, seed: seed,
		rng:      rand.New(rand.NewPCG(seed, 0x6e656d65736973)),
		epoch:    time.Now(),
		incs:     map[string][]checker.Increment{},
		counters: map[string]*atomic.Int64{},
	}
	var lib string
	if cfg.shim {
		var err error
		if lib, err = faketime.Build(t.TempDir()); err != nil {
			t.Skipf("skipping a clock-fault scenario: %v", err)
		}
	}
	for i := 0; i < cfg.nodes; i++ {
		var env []string
		if cfg.shim {
			ctl, err := faketime.NewControl(filepath.Join(t.TempDir(), fmt.Sprintf("clock%d", i)))
			require.NoError(t, err)
			t.Cleanup(func() { ctl.Close() })
			c.clocks = append(c.clocks, ctl)
			env = ctl.Env(lib)
		}
		var args []string
		if cfg.source != nil {
			// Protected mode refuses loopback clients other than 127.0.0.1.
			args = append(args, "--protected-mode", "no")
		}
		s, err := redistest.NewServerEnv(env, args...)
		require.NoError(t, err)
		t.Cleanup(s.Close)
		c.servers = append(c.servers, s)
	}
	for k := 0; k < cfg.keys; k++ {
		key := fmt.Sprintf("k%d", k)
		c.keys = append(c.keys, key)
		c.counters[key] = &atomic.Int64{}
	}
	for i := 0; i < cfg.clients; i++ {
		c.clients = append(c.clients, c.newClient(i, cfg.opts...))
	}
	return c
}

// newClient dials a Client whose connections go through proxies of its own,
// so that a partition can cut one Client off from some nodes.
func (c *chaos) newClient(i int, opts ...Option) *chaosClient {
	t := c.t
	cc := &chaosClient{until: func(u time.Time) time.Time { return u }}
	opts = append([]Option{WithKeyPrefix(chaosPrefix), WithRetry(2*time.Millisecond, 8*time.Millisecond)}, opts...)
	if c.cfg.clock != nil {
		k, until := c.cfg.clock(i)
		opts = append(opts, withClock(k))
		cc.until = until
	}
	if c.cfg.source != nil {
		cl, err := New(sourcePools(t, c.servers, c.cfg.source(i)), opts...)
		require.NoError(t, err)
		t.Cleanup(func() { cl.Close() })
		cc.Client = cl
		return cc
	}
	var addrs []string
	for _, s := range c.servers {
		p, err := faultproxy.New(s.Addr)
		require.NoError(t, err)
		t.Cleanup(func() { p.Close() })
		cc.proxies = append(cc.proxies, p)
		addrs = append(addrs, p.Addr())
	}
	cl, err := Dial(addrs, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { cl.Close() })
	cc.Client = cl
	return cc
}

// sourcePools returns one pool per server whose connections come from the
// local address src.
func sourcePools(t *testing.T, servers []*redistest.Server, src string) []Pool {
	var pools []Pool
	for _, s := range servers {
		addr := s.Addr
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		p := &redis.Pool{MaxIdle: DefaultMaxIdle, DialContext: func(ctx context.Context) (redis.Conn, error) {
			return redis.DialContext(ctx, "tcp", addr, redis.DialContextFunc(d.DialContext))
		}}
		t.Cleanup(func() { p.Close() })
		pools = append(pools, p)
	}
	return pools
}

// warm makes every Client complete first contact with every node and fill
// its pools, so that faults hit established Clients.
func (c *chaos) warm() {
	for _, cl := range c.clients {
		require.Eventually(c.t, func() bool {
			l, err := cl.TryLock(context.Background(), "warm", c.cfg.ttl)
			if err == nil {
				_ = l.Unlock(context.Background())
			}
			for _, n := range cl.nodes {
				n.mu.Lock()
				known := n.runID != ""
				n.mu.Unlock()
				if !known {
					return false
				}
			}
			return err == nil
		}, 10*time.Second, 10*time.Millisecond)
	}
	c.work(ctxFor(100 * time.Millisecond))
}

// since returns the harness clock's reading: time since the epoch on the
// test process's monotonic clock.
func (c *chaos) since() time.Duration { return time.Since(c.epoch) }

// faultOn and faultOff bracket a fault: grants between them count as
// handoffs under fault.
func (c *chaos) faultOn() {
	if c.faults.Add(1) == 1 {
		c.mu.Lock()
		c.fstart = c.since()
		c.mu.Unlock()
	}
}

func (c *chaos) faultOff() {
	if c.faults.Add(-1) == 0 {
		c.mu.Lock()
		c.windows = append(c.windows, [2]time.Duration{c.fstart, c.since()})
		c.mu.Unlock()
	}
}

// work runs the workers until ctx ends and returns when all have stopped.
// Each worker loops: Lock a random key (bounded by two TTLs), read the key's
// counter, pause for cfg.hold, write it back incremented if the lock is
// still valid, leave the critical section, Unlock.
func (c *chaos) work(ctx context.Context) {
	var wg sync.WaitGroup
	for w := 0; w < c.cfg.workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(c.seed, uint64(w)+1))
			cl := c.clients[w%len(c.clients)]
			for ctx.Err() == nil {
				c.once(ctx, cl, c.keys[rng.IntN(len(c.keys))])
			}
		}(w)
	}
	wg.Wait()
}

// once is one worker iteration on key.
func (c *chaos) once(ctx context.Context, cl *chaosClient, key string) {
	actx, cancel := context.WithTimeout(ctx, 2*c.cfg.ttl)
	l, err := cl.Lock(actx, key, c.cfg.ttl)
	cancel()
	c.mu.Lock()
	c.calls++
	switch {
	case err == nil:
		c.wins++
	case errors.Is(err, ErrQuorumUnreachable):
		c.unreach++
	}
	c.mu.Unlock()
	if err != nil {
		return
	}
	grant := c.since()
	under := c.faults.Load() > 0
	until := cl.until(l.Until()).Sub(c.epoch)
	cnt := c.counters[key]
	v := cnt.Load()
	time.Sleep(c.cfg.hold)
	acked := c.since() < until // a careful holder checks its validity before writing
	if acked {
		cnt.Store(v + 1)
	}
	end := c.since()
	_ = l.Unlock(context.Background())

	c.mu.Lock()
	defer c.mu.Unlock()
	c.holds = append(c.holds, checker.Hold{Key: key, Holder: l.Token(), Grant: grant, End: end, Until: until})
	c.incs[key] = append(c.incs[key], checker.Increment{Holder: l.Token(), Read: v, Acked: acked})
	c.grants = append(c.grants, grant)
	if under {
		c.underF++
	}
}

// record adds a hold made outside the workers (negative controls).
func (c *chaos) record(key string, h checker.Hold, inc checker.Increment) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h.Key = key
	c.holds = append(c.holds, h)
	c.incs[key] = append(c.incs[key], inc)
	c.grants = append(c.grants, h.Grant)
	if c.faults.Load() > 0 {
		c.underF++
	}
}

// chaosReport is the outcome of a scenario, as logged and written to
// CHAOS_REPORT.
type chaosReport struct {
	Scenario     string  `json:"scenario"`
	Seed         uint64  `json:"seed"`
	Seconds      float64 `json:"seconds"`
	Handoffs     int     `json:"handoffs"`
	UnderFault   int     `json:"handoffs_under_fault"`
	Violations   int     `json:"violations"`
	Overruns     int     `json:"overruns"`
	LostUpdates  int64   `json:"lost_updates"`
	LockCalls    int     `json:"lock_calls"`   // workers' Lock calls, each bounded by 2 TTLs
	Granted      int     `json:"granted"`      // of which granted
	Unreachable  int     `json:"unreachable"`  // of which failed with the quorum unreachable
	Availability float64 `json:"availability"` // 1 − Unreachable/LockCalls: calls not failed by the faults
	GrantRate    float64 `json:"grant_rate"`   // Granted/LockCalls (the rest lost to contention or faults)
	MaxGapMS     float64 `json:"max_gap_ms"`   // longest time without a grant
	Leftovers    int     `json:"leftover_keys"`

	violations []checker.Violation
	overruns   []checker.Overrun
	lost       map[string]checker.LostUpdateReport
	leftovers  []string
}

// judge runs every checker over the history recorded between from and to.
func (c *chaos) judge(from, to time.Duration) chaosReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := chaosReport{Scenario: c.t.Name(), Seed: c.seed, Seconds: (to - from).Seconds(), Handoffs: len(c.grants), UnderFault: c.underF}
	r.violations, r.overruns = checker.MutualExclusion(c.holds)
	r.Violations, r.Overruns = len(r.violations), len(r.overruns)
	r.lost = map[string]checker.LostUpdateReport{}
	for _, k := range c.keys {
		lr := checker.LostUpdates(c.incs[k], c.counters[k].Load())
		r.lost[k] = lr
		r.LostUpdates += lr.Lost + int64(len(lr.SameRead))
	}
	r.LockCalls, r.Granted, r.Unreachable = c.calls, c.wins, c.unreach
	if c.calls > 0 {
		r.Availability = 1 - float64(c.unreach)/float64(c.calls)
		r.GrantRate = float64(c.wins) / float64(c.calls)
	}
	r.MaxGapMS = float64(checker.LongestGap(c.grants, from, to)) / float64(time.Millisecond)
	return r
}

// quiesce closes every Client (waiting for their background releases),
// heals every node and proxy, waits one TTL and reports the lock keys left
// on any node.
func (c *chaos) quiesce(r *chaosReport) {
	for _, cl := range c.clients {
		for _, p := range cl.proxies {
			p.Heal()
		}
		assert.NoError(c.t, cl.Close())
	}
	for _, s := range c.servers {
		if !s.Running() {
			require.NoError(c.t, s.Restart())
		}
		s.Resume()
	}
	time.Sleep(c.cfg.ttl + 100*time.Millisecond)
	// With packet-level faults, poll for up to settle more: late
	// retransmissions may still be landing keys, each with its PX.
	deadline := time.Now().Add(c.cfg.settle)
	for {
		byNode := map[string][]string{}
		r.leftovers = nil
		for _, s := range c.servers {
			keys, err := redis.Strings(s.Do("KEYS", chaosPrefix+"*"))
			require.NoError(c.t, err, "node %s", s.Addr)
			for _, k := range keys {
				if strings.HasSuffix(k, WaitersKeySuffix) || strings.HasSuffix(k, WaitExpiryKeySuffix) {
					// The queue of a waiter that gave up while a node
					// was cut off stays until its entries expire.
					pttl, err := redis.Int64(s.Do("PTTL", k))
					require.NoError(c.t, err)
					if pttl < 0 || pttl > int64(maxQueueLife/time.Millisecond) {
						r.leftovers = append(r.leftovers, fmt.Sprintf("%s: %s (a queue with PTTL %d ms)", s.Addr, k, pttl))
					}
					continue
				}
				byNode[s.Addr] = append(byNode[s.Addr], k)
			}
		}
		r.leftovers = append(r.leftovers, checker.Leftovers(byNode)...)
		if len(r.leftovers) == 0 || !time.Now().Before(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.Leftovers = len(r.leftovers)
	for _, s := range c.servers { // say whether a leftover would ever expire
		keys, _ := redis.Strings(s.Do("KEYS", chaosPrefix+"*"))
		for _, k := range keys {
			pttl, _ := redis.Int64(s.Do("PTTL", k))
			c.t.Logf("leftover %s on %s: PTTL %d ms", k, s.Addr, pttl)
		}
	}
}

// log prints the report and appends it to CHAOS_REPORT if set.
func (c *chaos) log(r chaosReport) {
	c.t.Logf("chaos %s: seed=%d %.1fs handoffs=%d under_fault=%d violations=%d overruns=%d lost_updates=%d lock_calls=%d granted=%d unreachable=%d availability=%.1f%% max_gap=%.0fms leftover_keys=%d",
		r.Scenario, r.Seed, r.Seconds, r.Handoffs, r.UnderFault, r.Violations, r.Overruns, r.LostUpdates, r.LockCalls, r.Granted, r.Unreachable, 100*r.Availability, r.MaxGapMS, r.Leftovers)
	for i, v := range r.violations {
		if i == 5 {
			c.t.Logf("  … %d more violations", len(r.violations)-5)
			break
		}
		c.t.Logf("  violation: %v", v)
	}
	if path := os.Getenv("CHAOS_REPORT"); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			b, _ := json.Marshal(r)
			fmt.Fprintf(f, "%s\n", b)
			f.Close()
		}
	}
}

// maxQueueLife bounds how long a queue of waiters outlives its last entry's
// refresh: MaxWakeInterval plus the largest grace (scripts/queue.lua).
const maxQueueLife = MaxWakeInterval + 2*MaxNodeTimeout + MaxSplitBackoff

// requireSafe asserts the safety properties of a report: no overlapping
// valid holders, no lost update, no lock key left behind.
func requireSafe(t *testing.T, r chaosReport) {
	t.Helper()
	assert.Zero(t, r.Violations, "mutual exclusion violated: %v", r.violations)
	for k, lr := range r.lost {
		assert.True(t, lr.OK(), "key %s: lost updates %+v", k, lr)
	}
	assert.Empty(t, r.leftovers, "lock keys left after quiescence plus one TTL")
}

// requireLive asserts that grants kept coming: the longest time without
// any grant stays below 5 TTLs (a key stranded on a cut node costs at most
// one TTL, a fault at most 600 ms, a guard window one TTL), and below 3/4 of
// the run so that the check still means something in the short tier.
func (c *chaos) requireLive(r chaosReport) {
	c.t.Helper()
	bound := min(5*c.cfg.ttl, 3*chaosDuration(c.t)/4)
	assert.Less(c.t, r.MaxGapMS, float64(bound/time.Millisecond), "acquisitions stalled")
	assert.Positive(c.t, r.Handoffs)
}

// runScenario runs the workers for the scenario's duration with nemesis
// running alongside (it must return when its ctx ends, healing what it
// broke), then judges, quiesces and logs. It returns the report.
func (c *chaos) runScenario(nemesis func(ctx context.Context)) chaosReport {
	d := chaosDuration(c.t)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	from := c.since()
	var wg sync.WaitGroup
	if nemesis != nil {
		wg.Add(1)
		go func() { defer wg.Done(); nemesis(ctx) }()
	}
	c.work(ctx)
	wg.Wait()
	r := c.judge(from, c.since())
	c.quiesce(&r)
	c.log(r)
	return r
}

// sleepCtx sleeps for d or until ctx ends; it reports whether ctx is live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// between returns a random duration in [lo, hi) from the nemesis's rng.
func (c *chaos) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(c.rng.Int64N(int64(hi-lo)))
}

// holders returns the indexes of the servers on which the lock key (with
// prefix) holds token: the targeted nemesis's view of where a lock lives.
func (c *chaos) holders(name, token string) []int {
	var out []int
	for i, s := range c.servers {
		if !s.Running() {
			continue
		}
		v, err := redis.String(s.Do("GET", name))
		if err == nil && v == token {
			out = append(out, i)
		}
	}
	return out
}
