package redlock

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redlockgo/redlock/internal/faultproxy"
)

// Network faults through the in-process proxies: every Client reaches node i
// through a proxy of its own, so a fault on Client k's proxy i cuts exactly
// the link between k and i (asymmetric partitions included).

// netFault applies one random network fault to p: blackhole (silence, as a
// partition that drops packets), reset (broken and refused connections) or
// latency. It returns a description for logs.
func (c *chaos) netFault(p *faultproxy.Proxy) string {
	switch c.rng.IntN(3) {
	case 0:
		p.Blackhole()
		return "blackhole"
	case 1:
		p.Reset()
		return "reset"
	default:
		d := c.between(5*time.Millisecond, 40*time.Millisecond)
		p.Delay(d)
		return "delay " + d.String()
	}
}

// partitionNemesis cuts each Client from cut(client) random nodes (a
// different set per Client), with a random network fault per link, for a
// random while, then heals, until ctx ends.
func (c *chaos) partitionNemesis(cut func(client int) int) func(ctx context.Context) {
	return func(ctx context.Context) {
		for ctx.Err() == nil {
			c.faultOn()
			var hit []*faultproxy.Proxy
			for k, cl := range c.clients {
				for _, i := range c.rng.Perm(len(c.servers))[:cut(k)] {
					c.netFault(cl.proxies[i])
					hit = append(hit, cl.proxies[i])
				}
			}
			sleepCtx(context.Background(), c.between(150*time.Millisecond, 600*time.Millisecond))
			for _, p := range hit {
				p.Heal()
			}
			c.faultOff()
			sleepCtx(ctx, c.between(50*time.Millisecond, 300*time.Millisecond))
		}
	}
}

// TestChaosPartitionMinority: every Client loses a random minority of nodes
// (blackholed, reset or slowed links), over and over. Invariant: safety, and
// acquisitions continue (each Client always reaches a majority).
func TestChaosPartitionMinority(t *testing.T) {
	c := newChaos(t, chaosConfig{})
	minority := len(c.servers) - quorum(len(c.servers))
	r := c.runScenario(c.partitionNemesis(func(int) int { return 1 + c.rng.IntN(minority) }))
	requireSafe(t, r)
	assert.Positive(t, r.UnderFault)
	c.requireLive(r)
}

// TestChaosPartitionMajority: Client 0 loses a majority of nodes while
// Client 1 loses a minority, over and over. Invariant: safety (Client 0
// cannot acquire while cut off; Client 1 goes on).
func TestChaosPartitionMajority(t *testing.T) {
	c := newChaos(t, chaosConfig{})
	n := len(c.servers)
	r := c.runScenario(c.partitionNemesis(func(k int) int {
		if k == 0 {
			return quorum(n) + c.rng.IntN(n-quorum(n)+1)
		}
		return c.rng.IntN(n - quorum(n) + 1)
	}))
	requireSafe(t, r)
	assert.Positive(t, r.UnderFault)
}

// TestChaosPartitionMajorityNoGrant: a Client cut off from a majority gets
// no lock at all, and learns it within about one per-node timeout.
func TestChaosPartitionMajorityNoGrant(t *testing.T) {
	timeout := 300 * time.Millisecond
	c := newChaos(t, chaosConfig{opts: []Option{WithNodeTimeout(timeout)}})
	c.warm()
	cl := c.clients[0]
	for _, i := range []int{1, 2, 3} {
		cl.proxies[i].Blackhole()
	}
	start := time.Now()
	_, err := cl.TryLock(context.Background(), "probe", c.cfg.ttl)
	took := time.Since(start)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrQuorumUnreachable)
	assert.ErrorIs(t, err, ErrNodeTimeout)
	assert.Len(t, failedNodes(err), 3, "the blackholed nodes are named: %v", err)
	assert.Less(t, took, 5*timeout)
	t.Logf("chaos %s: time to error behind a majority partition: %v (per-node timeout %v)", t.Name(), took.Round(time.Millisecond), timeout)
	other := c.clients[1]
	l, err := other.TryLock(context.Background(), "probe-other-side", c.cfg.ttl)
	require.NoError(t, err, "the other side of the partition still has every node")
	require.NoError(t, l.Unlock(context.Background()))
}
