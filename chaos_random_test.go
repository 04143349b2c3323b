package redlock

import (
	"context"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestChaosRandomized mixes the safe nemeses at random, driven by the
// printed seed (CHAOS_SEED replays the schedule): kill and immediate restart
// (the restart guard on), pause, network faults per Client, clock-rate skew
// within the drift factor, and a targeted nemesis that looks up which nodes
// hold a key right now and kills or pauses exactly a minority of those.
// At most a minority of nodes is ever down or guarded. Invariant: safety,
// and acquisitions continue.
func TestChaosRandomized(t *testing.T) {
	c := newChaos(t, chaosConfig{shim: true})
	n := len(c.servers)
	minority := n - quorum(n)
	window := c.cfg.ttl + drift(c.cfg.ttl, DefaultDriftFactor) + 300*time.Millisecond
	recovering := make([]time.Time, n)
	actions := map[string]int{}

	// pick returns up to k nodes that are not recovering, preferring those in
	// want (the targeted nemesis's holder set) when given.
	pick := func(k int, want []int) []int {
		busy := 0
		for i := range recovering {
			if time.Now().Before(recovering[i]) {
				busy++
			}
		}
		k = min(k, minority-busy)
		pool := want
		if pool == nil {
			pool = c.rng.Perm(n)
		}
		var out []int
		for _, i := range pool {
			if len(out) < k && !time.Now().Before(recovering[i]) {
				out = append(out, i)
			}
		}
		return out
	}
	// hold returns the nodes holding the most common token of a random key.
	held := func() []int {
		name := chaosPrefix + c.keys[c.rng.IntN(len(c.keys))]
		by := map[string][]int{}
		for i, s := range c.servers {
			if v, err := redis.String(s.Do("GET", name)); err == nil {
				by[v] = append(by[v], i)
			}
		}
		var best []int
		for _, nodes := range by {
			if len(nodes) > len(best) {
				best = nodes
			}
		}
		return best
	}

	r := c.runScenario(func(ctx context.Context) {
		for ctx.Err() == nil {
			var victims []int
			action := []string{"kill", "pause", "net", "skew", "targeted"}[c.rng.IntN(5)]
			if action == "targeted" {
				victims = pick(minority, held())
				if c.rng.IntN(2) == 0 {
					action = "targeted-kill"
				} else {
					action = "targeted-pause"
				}
			} else {
				victims = pick(1+c.rng.IntN(minority), nil)
			}
			if len(victims) == 0 && action != "net" {
				sleepCtx(ctx, 50*time.Millisecond)
				continue
			}
			actions[action]++
			c.faultOn()
			down := c.between(150*time.Millisecond, 600*time.Millisecond)
			switch action {
			case "kill", "targeted-kill":
				for _, v := range victims {
					c.servers[v].Kill()
				}
				sleepCtx(context.Background(), down)
				for _, v := range victims {
					require.NoError(t, c.servers[v].Restart())
					recovering[v] = time.Now().Add(window)
				}
			case "pause", "targeted-pause":
				for _, v := range victims {
					c.servers[v].Pause()
				}
				sleepCtx(context.Background(), down)
				for _, v := range victims {
					c.servers[v].Resume()
				}
			case "net":
				for _, cl := range c.clients {
					for _, i := range c.rng.Perm(n)[:1+c.rng.IntN(minority)] {
						c.netFault(cl.proxies[i])
						defer cl.proxies[i].Heal() // also healed below; Heal is idempotent
					}
				}
				sleepCtx(context.Background(), down)
				for _, cl := range c.clients {
					for _, p := range cl.proxies {
						p.Heal()
					}
				}
			case "skew":
				rate := 1 + (c.rng.Float64()-0.5)*DefaultDriftFactor // within ±0.5%
				for _, v := range victims {
					require.NoError(t, c.clocks[v].SetRate(rate))
				}
				sleepCtx(context.Background(), 2*down)
				for _, v := range victims {
					require.NoError(t, c.clocks[v].SetRate(1))
				}
			}
			c.faultOff()
			sleepCtx(ctx, c.between(20*time.Millisecond, 200*time.Millisecond))
		}
	})
	t.Logf("chaos %s: nemesis actions %v", t.Name(), actions)
	requireSafe(t, r)
	assert.Positive(t, r.UnderFault)
	c.requireLive(r)
}
