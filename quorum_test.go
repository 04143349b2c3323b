package redlock

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestQuorum(t *testing.T) {
	for n, want := range map[int]int{1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 6: 4, 7: 4} {
		assert.Equal(t, want, quorum(n), "quorum(%d)", n)
		// Two quorums always intersect: that is the whole point.
		assert.Greater(t, 2*quorum(n), n, "quorums of %d must intersect", n)
	}
}

func TestTallyDecisions(t *testing.T) {
	tests := []struct {
		name                                         string
		t                                            tally
		reached, impossible, decided, refused, unrch bool
	}{
		{"nothing yet", tally{n: 5}, false, false, false, false, false},
		{"bare majority", tally{n: 5, yes: 3}, true, false, true, false, false},
		{"two yes, pending", tally{n: 5, yes: 2, no: 1}, false, false, false, false, false},
		{"minority refuses", tally{n: 5, yes: 2, no: 2}, false, false, false, false, false},
		{"three refuse", tally{n: 5, no: 3}, false, true, true, true, false},
		{"three fail", tally{n: 5, fail: 3}, false, true, true, false, true},
		{"mixed impossible", tally{n: 5, yes: 2, no: 2, fail: 1}, false, true, true, false, false},
		{"even n needs 3 of 4", tally{n: 4, yes: 2, no: 2}, false, true, true, true, false},
		{"even n fail 2", tally{n: 4, yes: 2, fail: 2}, false, true, true, false, true},
		{"single node yes", tally{n: 1, yes: 1}, true, false, true, false, false},
		{"single node fail", tally{n: 1, fail: 1}, false, true, true, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.reached, tt.t.reached(), "reached")
			assert.Equal(t, tt.impossible, tt.t.impossible(), "impossible")
			assert.Equal(t, tt.decided, tt.t.decided(), "decided")
			assert.Equal(t, tt.refused, tt.t.refusedByQuorum(), "refusedByQuorum")
			assert.Equal(t, tt.unrch, tt.t.unreachable(), "unreachable")
			assert.Equal(t, tt.reached || tt.refused, tt.t.held(), "held")
		})
	}
}

// TestTallyExhaustive checks the decision rules against their definition for
// every possible vote split up to 9 nodes.
func TestTallyExhaustive(t *testing.T) {
	for n := 1; n <= 9; n++ {
		for yes := 0; yes <= n; yes++ {
			for no := 0; yes+no <= n; no++ {
				for fail := 0; yes+no+fail <= n; fail++ {
					tl := tally{n: n, yes: yes, no: no, fail: fail}
					pending := n - yes - no - fail
					canReach := yes+pending >= quorum(n)
					assert.Equal(t, !canReach, tl.impossible(), "%+v", tl)
					// "refused" must mean: even if every failed or pending node held our key, no quorum could.
					assert.Equal(t, n-no < quorum(n), tl.refusedByQuorum(), "%+v", tl)
					assert.Equal(t, n-fail < quorum(n), tl.unreachable(), "%+v", tl)
				}
			}
		}
	}
}
