package redlock

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redlockgo/redlock/internal/redistest"
)

func TestFenceOffIsZero(t *testing.T) {
	servers, c := cluster(t, 3)
	l, err := c.TryLock(context.Background(), "plain", 5*time.Second)
	require.NoError(t, err)
	assert.Zero(t, l.Fence())
	for _, s := range servers {
		n, err := redis.Int(s.Do("EXISTS", counterKey("plain")))
		require.NoError(t, err)
		assert.Zero(t, n, "no counter without fencing on %s", s.Addr)
	}
	require.NoError(t, l.Unlock(context.Background()))
	assert.Zero(t, (*Lock)(nil).Fence())
}

// TestFenceSequentialHolders: successive holders get strictly increasing
// tokens, also after a minority of nodes is killed and restarted empty.
func TestFenceSequentialHolders(t *testing.T) {
	servers := redistest.Start(t, 5)
	c := dial(t, servers, WithFencing(), WithNodeTimeout(200*time.Millisecond))
	other := dial(t, servers, WithFencing(), WithNodeTimeout(200*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var last uint64
	next := func(round int) {
		cl := c
		if round%2 == 1 {
			cl = other // holders alternate between two Clients
		}
		l, err := cl.Lock(ctx, "seq", 5*time.Second)
		require.NoError(t, err, "round %d", round)
		require.Greater(t, l.Fence(), last, "round %d: tokens must increase", round)
		last = l.Fence()
		require.NoError(t, l.Unlock(ctx))
	}
	for round := range 20 {
		next(round)
	}
	// Lose the counters of a minority: kill two nodes (the holder side) and
	// restart them empty. The quorum's intersection with the last write-back
	// and the TIME seed keep tokens increasing.
	for _, i := range []int{0, 1} {
		servers[i].Kill()
	}
	for round := 20; round < 25; round++ {
		next(round) // with two nodes down
	}
	for _, i := range []int{0, 1} {
		require.NoError(t, servers[i].Restart())
	}
	for round := 25; round < 45; round++ {
		next(round)
	}
	// Make the restarted nodes' counters dominate: sequential holders still
	// increase (T = max over the quorum + 1).
	for _, i := range []int{3, 4} {
		servers[i].Kill()
		require.NoError(t, servers[i].Restart())
	}
	for round := 45; round < 60; round++ {
		next(round)
	}
}

// TestFenceCounterLifetime: counters carry the configured lifetime, refreshed
// on use, and an expired counter re-seeds from TIME above every earlier token.
func TestFenceCounterLifetime(t *testing.T) {
	servers := redistest.Start(t, 3)
	c := dial(t, servers, WithFencing(), WithFenceLifetime(MinFenceLifetime))
	ctx := context.Background()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	l, err := c.Lock(ctx, "life", 5*time.Second)
	require.NoError(t, err)
	first := l.Fence()
	require.NoError(t, l.Unlock(ctx))
	// A quorum wrote the counter with the lifetime (a straggler may still be
	// writing it: Unlock returns after a quorum).
	withLifetime := 0
	for _, s := range servers {
		pttl, err := redis.Int64(s.Do("PTTL", counterKey("life")))
		require.NoError(t, err)
		assert.LessOrEqual(t, pttl, MinFenceLifetime.Milliseconds(), "counter lifetime on %s", s.Addr)
		if pttl > 0 {
			withLifetime++
		}
	}
	assert.GreaterOrEqual(t, withLifetime, quorum(len(servers)))
	require.Eventually(t, func() bool {
		for _, s := range servers {
			if n, _ := redis.Int(s.Do("EXISTS", counterKey("life"))); n != 0 {
				return false
			}
		}
		return true
	}, 10*time.Second, 20*time.Millisecond, "counters expire")
	l, err = c.Lock(ctx, "life", 5*time.Second)
	require.NoError(t, err)
	assert.Greater(t, l.Fence(), first, "a re-seeded counter still dominates")
	require.NoError(t, l.Unlock(ctx))
}

// fencedResource is the protected resource of Kleppmann's scenario: it
// remembers the largest token it has seen and rejects writes with a smaller one.
type fencedResource struct {
	mu      sync.Mutex
	highest uint64
	value   string
}

func (r *fencedResource) write(fence uint64, v string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if fence < r.highest {
		return fmt.Errorf("stale token %d < %d", fence, r.highest)
	}
	r.highest, r.value = fence, v
	return nil
}

// TestFenceStaleHolderRejected is Kleppmann's scenario on real servers: A
// acquires, pauses past its validity, B acquires and writes; A's late write
// is rejected by the resource, B's accepted.
func TestFenceStaleHolderRejected(t *testing.T) {
	servers := redistest.Start(t, 5)
	a := dial(t, servers, WithFencing())
	b := dial(t, servers, WithFencing())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var res fencedResource

	la, err := a.Lock(ctx, "storage", time.Second)
	require.NoError(t, err)
	require.NoError(t, res.write(la.Fence(), "A before the pause"))
	time.Sleep(time.Until(la.Until()) + 200*time.Millisecond) // A's GC pause
	lb, err := b.Lock(ctx, "storage", 5*time.Second)
	require.NoError(t, err)
	require.Greater(t, lb.Fence(), la.Fence())
	require.NoError(t, res.write(lb.Fence(), "B"))

	assert.Error(t, res.write(la.Fence(), "A after the pause"), "the stale holder's write is rejected")
	assert.Equal(t, "B", res.value)
	require.NoError(t, res.write(lb.Fence(), "B again"), "the holder keeps writing")
	assert.ErrorIs(t, la.Unlock(ctx), ErrLockLost)
	require.NoError(t, lb.Unlock(ctx))
}

// TestFenceWriteBackRefused: a node whose counter is at or above the minted
// token refuses the write-back, so a quorum of such nodes denies the lock;
// a garbage counter is a node error, not a panic.
func TestFenceWriteBackRefused(t *testing.T) {
	servers := redistest.Start(t, 3)
	c := dial(t, servers, WithFencing())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const far = 8_000_000_000_000_000 // above any TIME in µs, below 2^53
	for _, s := range servers {
		_, err := s.Do("SET", counterKey("w"), far)
		require.NoError(t, err)
	}
	l, err := c.TryLock(ctx, "w", 5*time.Second)
	require.NoError(t, err)
	assert.Equal(t, uint64(far+1), l.Fence(), "T = max over the quorum + 1")
	require.NoError(t, l.Unlock(ctx))

	for _, s := range servers {
		_, err := s.Do("SET", counterKey("w"), "garbage")
		require.NoError(t, err)
	}
	_, err = c.TryLock(ctx, "w", 5*time.Second)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrNotObtained)
	assert.Contains(t, err.Error(), "not a number")
}

// TestSimNodeMatchesRedis is the differential test of the simulation: the same
// random sequences of script calls, on a real redis-server and on a simNode
// whose clock is the wall clock, give the same answers and leave the same
// state. Values derived from TIME must both lie in the call's time window.
func TestSimNodeMatchesRedis(t *testing.T) {
	server := redistest.Start(t, 1)[0]
	conn, err := server.Conn()
	require.NoError(t, err)
	defer conn.Close()
	const key = "diff"
	ck := counterKey(key)
	seeds := 6
	if testing.Short() {
		seeds = 4
	}
	for seed := range seeds {
		_, err := conn.Do("FLUSHALL")
		require.NoError(t, err)
		sim := newSimNode(time.Now)
		rng := rand.New(rand.NewPCG(uint64(seed), 6))
		long, short := int64(60000), int64(25) // a short TTL is always followed by a wait
		for step := range 120 {
			tok := []string{"ta", "tb"}[rng.IntN(2)]
			ttl, life := long, long
			wait := false
			if rng.IntN(6) == 0 {
				ttl, wait = short, true
			}
			if rng.IntN(8) == 0 {
				life, wait = short, true
			}
			var script *script
			var args []interface{}
			switch op := rng.IntN(10); op {
			case 0:
				script, args = acquireScript, []interface{}{key, waitersKey(key), waitExpiryKey(key), tok, ttl, "", 0, 5000, 500, "", 0}
			case 1, 2:
				script, args = acquireFencedScript, []interface{}{key, ck, waitersKey(key), waitExpiryKey(key), tok, ttl, life, "", 0, 5000, 500, "", 0}
			case 3, 4:
				cur, _ := redis.String(conn.Do("GET", ck))
				n, _ := strconv.ParseUint(cur, 10, 64)
				ts := []uint64{5, n, n + 1, n + uint64(rng.IntN(1000)), uint64(time.Now().UnixMicro()) + 1e9, 7_000_000_000_000_000}
				script, args = fenceScript, []interface{}{key, ck, tok, ts[rng.IntN(len(ts))], life}
			case 5:
				script, args = extendScript, []interface{}{1, key, tok, ttl}
			case 6:
				script, args = releaseScript, []interface{}{key, waitersKey(key), waitExpiryKey(key), tok, releaseChannel(key), "", "", 0}
			case 7:
				v := []string{"7", "7000000000000000", "garbage"}[rng.IntN(3)]
				_, err := conn.Do("SET", ck, v)
				require.NoError(t, err)
				sim.keys[ck] = simEntry{val: v}
				continue
			case 8:
				_, err := conn.Do("DEL", ck)
				require.NoError(t, err)
				delete(sim.keys, ck)
				continue
			case 9:
				wait = true
			}
			where := fmt.Sprintf("seed %d step %d: %s %v", seed, step, scriptName(script), args)
			opStart := time.Now()
			// TTLs are compared within the time the step has taken (a loaded
			// machine can stall between the two calls), plus 20 ms.
			slack := func() int64 { return time.Since(opStart).Milliseconds() + 20 }
			if script != nil {
				t0 := opStart.UnixMicro()
				want, werr := script.Do(conn, args...)
				got, gerr := sim.run(script, args...)
				if testing.Verbose() {
					t.Logf("%s: redis %v %v sim %v %v", where, want, werr, got, gerr)
				}
				t1 := time.Now().UnixMicro()
				if werr != nil || gerr != nil {
					require.Error(t, werr, where)
					require.Error(t, gerr, where)
					assert.Contains(t, werr.Error(), "not a number", where)
					continue
				}
				requireSameReply(t, want, got, t0, t1, slack(), where)
			}
			if took := time.Since(opStart).Milliseconds(); wait && took > short/2 {
				// A short TTL may have run out on one side only: the states
				// are comparable again after the wait.
				t.Logf("%s: step took %d ms, state not compared", where, took)
				time.Sleep(time.Duration(5*short/2) * time.Millisecond)
				continue
			}
			// Same state: lock value and counter value; TTLs within the slack.
			t0 := time.Now().UnixMicro()
			for _, k := range []string{key, ck} {
				wv, werr := redis.String(conn.Do("GET", k))
				gv, gok := sim.get(k)
				if werr == redis.ErrNil {
					require.False(t, gok, "%s: %s absent on redis, %q on sim", where, k, gv)
					continue
				}
				require.NoError(t, werr)
				require.True(t, gok, "%s: %s is %q on redis, absent on sim", where, k, wv)
				wn, e1 := strconv.ParseInt(wv, 10, 64)
				gn, e2 := strconv.ParseInt(gv, 10, 64)
				if e1 == nil && e2 == nil && wn != gn {
					require.True(t, timeLike(wn, t0) && timeLike(gn, t0), "%s: %s is %q on redis, %q on sim", where, k, wv, gv)
					// Two TIME seeds: continue from the same counter.
					e := sim.keys[k]
					e.val = wv
					sim.keys[k] = e
				} else if e1 != nil || e2 != nil {
					require.Equal(t, wv, gv, "%s: %s", where, k)
				}
				wp, err := redis.Int64(conn.Do("PTTL", k))
				require.NoError(t, err)
				assert.InDelta(t, wp, sim.pttl(k), float64(slack()), "%s: PTTL of %s", where, k)
			}
			if wait {
				time.Sleep(time.Duration(5*short/2) * time.Millisecond)
			}
		}
	}
}

// timeLike reports whether v is a TIME reading in µs from the last few seconds
// before now (µs): two such readings of a real and a simulated node differ.
func timeLike(v, now int64) bool { return v <= now+1_000_000 && v > now-5_000_000 }

func requireSameReply(t *testing.T, want, got interface{}, t0, t1, slackMS int64, where string) {
	t.Helper()
	wl, wok := want.([]interface{})
	gl, gok := got.([]interface{})
	if !wok || !gok {
		require.Equal(t, want, got, where)
		return
	}
	require.Equal(t, len(wl), len(gl), "%s: %v vs %v", where, want, got)
	for i := range wl {
		if wb, ok := wl[i].([]byte); ok { // a holder's token
			require.Equal(t, wb, gl[i], where)
			continue
		}
		w, g := wl[i].(int64), gl[i].(int64)
		if w == g {
			continue
		}
		inWindow := func(v int64) bool { return v >= t0 && v <= t1 }
		switch {
		case i == 1 && wl[0] == int64(0): // a holder's PTTL
			assert.InDelta(t, w, g, float64(slackMS), where)
		case inWindow(w) && inWindow(g): // max(counter, TIME) where TIME won
		default:
			require.Equal(t, want, got, where)
		}
	}
}

func scriptName(s *script) string {
	switch s {
	case acquireScript:
		return "acquire"
	case acquireFencedScript:
		return "acquire_fenced"
	case fenceScript:
		return "fence"
	case extendScript:
		return "extend"
	case releaseScript:
		return "release"
	}
	return "direct"
}

func TestMintToken(t *testing.T) {
	results := []result{{val: 7}, {val: 99}, {val: 12}, {val: 500}, {val: 3}}
	// Only the counters of collected yes votes count: a refusal's val is a
	// PTTL, a pending or failed node's val is unknown.
	votes := []vote{voteYes, voteNo, voteYes, votePending, voteYes}
	assert.Equal(t, uint64(13), mintToken(results, votes))
	assert.Equal(t, uint64(1), mintToken(results, make([]vote, len(results))))
}

func TestParseFencedAcquire(t *testing.T) {
	v, val, _, err := parseAcquire([]interface{}{int64(1), int64(1_700_000_000_000_000)})
	require.NoError(t, err)
	assert.Equal(t, voteYes, v)
	assert.Equal(t, int64(1_700_000_000_000_000), val)
	v, _, _, err = parseAcquire([]interface{}{int64(1), int64(0)})
	assert.Equal(t, voteFail, v, "a grant without a counter is malformed")
	assert.Error(t, err)
}

func TestFenceOptions(t *testing.T) {
	_, err := Dial([]string{"127.0.0.1:1"}, WithFencing(), WithFenceLifetime(MinFenceLifetime-time.Millisecond))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "WithFenceLifetime")
	c, err := Dial([]string{"127.0.0.1:1"}, WithFencing(), WithFenceLifetime(90*time.Minute+time.Microsecond))
	require.NoError(t, err)
	assert.True(t, c.cfg.fencing)
	assert.Equal(t, 90*time.Minute, c.cfg.fenceLifetime, "whole milliseconds")
	require.NoError(t, c.Close())
}
