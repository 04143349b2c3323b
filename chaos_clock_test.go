package redlock

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Clock faults. Server clocks are driven through the LD_PRELOAD shim
// (chaos/faketime/shim.c); the client's clock through the library's clock
// seam (withClock), since LD_PRELOAD has no effect on Go programs.

// TestChaosServerClockTargeted forces the holder onto a bare majority that
// contains the skewed node 2. One fast node cannot break a lock held on four
// or five nodes; on a bare majority it can, if it runs faster than the drift
// factor allows.
func TestChaosServerClockTargeted(t *testing.T) {
	cases := []struct {
		name    string
		rate    float64       // node 2's clock rate from before the grant
		jump    time.Duration // node 2's wall-clock step after the grant
		flagged bool
	}{
		{name: "rate within drift (1.005)", rate: 1.005},
		{name: "slow node (0.5)", rate: 0.5},
		{name: "rate beyond drift (2.0)", rate: 2.0, flagged: true},
		{name: "wall clock jumps forward", jump: 3 * time.Second, flagged: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newChaos(t, chaosConfig{ttl: 2 * time.Second, shim: true})
			var before, after func()
			if tc.rate != 0 {
				before = func() { require.NoError(t, c.clocks[2].SetRate(tc.rate)) }
			}
			if tc.jump != 0 {
				after = func() { require.NoError(t, c.clocks[2].Jump(tc.jump)) }
			}
			stolen, r := c.targeted(before, after)
			requireOutcome(t, tc.flagged, stolen, r)
		})
	}
}

// TestChaosServerSkewWithinDrift: two nodes' clocks run 0.5% fast and slow
// (within the default drift factor of 1%) for the whole run, while the
// minority nemesis kills and pauses nodes. Invariant: 0 violations.
func TestChaosServerSkewWithinDrift(t *testing.T) {
	c := newChaos(t, chaosConfig{shim: true})
	require.NoError(t, c.clocks[0].SetRate(1.005))
	require.NoError(t, c.clocks[1].SetRate(0.995))
	c.faultOn() // the skew is a fault for the whole run
	r := c.runScenario(c.minorityNemesis)
	c.faultOff()
	requireSafe(t, r)
}

// rateClock runs at rate times the real rate from base: a client clock that
// drifts. Readings keep Go's monotonic component, so differences between
// them are immune to wall-clock steps, like the real clock's.
type rateClock struct {
	base time.Time
	rate float64
}

func (k rateClock) Now() time.Time {
	return k.base.Add(time.Duration(float64(time.Since(k.base)) * k.rate))
}

// real returns the real instant at which this clock reads u.
func (k rateClock) real(u time.Time) time.Time {
	return k.base.Add(time.Duration(float64(u.Sub(k.base)) / k.rate))
}

// driftClocks gives Client i the rate rates[i] (1 for the others).
func driftClocks(rates ...float64) func(int) (clock, func(time.Time) time.Time) {
	return func(i int) (clock, func(time.Time) time.Time) {
		r := 1.0
		if i < len(rates) {
			r = rates[i]
		}
		k := rateClock{base: time.Now(), rate: r}
		return k, k.real
	}
}

// TestChaosClientDrift: the holder's clock runs slow (it underestimates
// elapsed time, so it believes its lock valid for longer). Within the drift
// factor (0.995 against 1%) the lock stays safe even on a bare majority;
// far beyond it (0.9) the checkers flag it.
func TestChaosClientDrift(t *testing.T) {
	for _, tc := range []struct {
		rate    float64
		flagged bool
	}{{0.995, false}, {1.005, false}, {0.9, true}} {
		t.Run(fmt.Sprintf("rate=%v", tc.rate), func(t *testing.T) {
			c := newChaos(t, chaosConfig{ttl: 2 * time.Second, clock: driftClocks(tc.rate)})
			stolen, r := c.targeted(nil, nil)
			requireOutcome(t, tc.flagged, stolen, r)
		})
	}
}

// TestChaosClientDriftWorkers: both Clients drift within the factor (one
// slow, one fast) while the minority nemesis runs. Invariant: 0 violations.
func TestChaosClientDriftWorkers(t *testing.T) {
	c := newChaos(t, chaosConfig{clock: driftClocks(0.995, 1.005)})
	c.faultOn()
	r := c.runScenario(c.minorityNemesis)
	c.faultOff()
	requireSafe(t, r)
}
