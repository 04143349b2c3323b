package checker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const ms = time.Millisecond

func hold(key, who string, grant, end, until int) Hold {
	return Hold{Key: key, Holder: who, Grant: time.Duration(grant) * ms, End: time.Duration(end) * ms, Until: time.Duration(until) * ms}
}

func TestMutualExclusionGood(t *testing.T) {
	v, o := MutualExclusion([]Hold{
		hold("k", "a", 0, 10, 100),
		hold("k", "b", 10, 20, 110), // starts exactly when a ended: no overlap
		hold("j", "c", 5, 15, 100),  // another key overlapping in time
		hold("k", "d", 30, 40, 130),
	})
	assert.Empty(t, v)
	assert.Empty(t, o)
}

func TestMutualExclusionOverlap(t *testing.T) {
	v, o := MutualExclusion([]Hold{
		hold("k", "b", 5, 20, 100), // given out of order
		hold("k", "a", 0, 10, 100),
	})
	require.Len(t, v, 1)
	assert.Equal(t, "a", v[0].A.Holder)
	assert.Equal(t, "b", v[0].B.Holder)
	assert.Equal(t, 5*ms, v[0].Overlap)
	assert.Empty(t, o)
	assert.Contains(t, v[0].String(), `key "k"`)
}

func TestMutualExclusionOverlapBehindLongHolder(t *testing.T) {
	// b ends early, c starts after b but inside a: the sweep must compare
	// c with a, the interval that reaches furthest.
	v, _ := MutualExclusion([]Hold{
		hold("k", "a", 0, 50, 100),
		hold("k", "b", 1, 2, 100),
		hold("k", "c", 10, 20, 100),
	})
	require.Len(t, v, 2)
	assert.Equal(t, "c", v[1].B.Holder)
	assert.Equal(t, "a", v[1].A.Holder)
}

func TestMutualExclusionOverrunIsSeparate(t *testing.T) {
	// a's validity ended at 10 but it stayed until 30; b got the lock at 20.
	v, o := MutualExclusion([]Hold{
		hold("k", "a", 0, 30, 10),
		hold("k", "b", 20, 40, 120),
	})
	assert.Empty(t, v, "an overlap caused only by an overrun is not a lock failure")
	require.Len(t, o, 1)
	assert.Equal(t, "a", o[0].Hold.Holder)
	assert.Equal(t, 20*ms, o[0].By)
	require.NotNil(t, o[0].Next)
	assert.Equal(t, "b", o[0].Next.Holder)
}

func TestMutualExclusionSameHolderTwice(t *testing.T) {
	// One holder's records (e.g. before and after Extend) never conflict.
	v, _ := MutualExclusion([]Hold{hold("k", "a", 0, 10, 100), hold("k", "a", 5, 20, 100)})
	assert.Empty(t, v)
}

func TestLostUpdates(t *testing.T) {
	good := LostUpdates([]Increment{{"a", 0, true}, {"b", 1, true}, {"c", 2, false}, {"d", 2, true}}, 3)
	assert.True(t, good.OK())
	assert.Equal(t, int64(3), good.Acked)

	bad := LostUpdates([]Increment{{"a", 0, true}, {"b", 0, true}, {"c", 1, true}}, 2)
	assert.False(t, bad.OK())
	assert.Equal(t, int64(1), bad.Lost)
	assert.Equal(t, []int64{0}, bad.SameRead)

	// A counter written behind the checker's back also fails.
	assert.False(t, LostUpdates([]Increment{{"a", 0, true}}, 5).OK())
}

func TestFencingOrder(t *testing.T) {
	assert.Empty(t, FencingOrder([]Grant{{"a", 0, 1}, {"c", 20 * ms, 7}, {"b", 10 * ms, 3}}))

	bad := FencingOrder([]Grant{{"a", 0, 10}, {"b", 10 * ms, 2}, {"c", 20 * ms, 5}})
	require.Len(t, bad, 2, "b and c are both below a's token (INCR-and-max trap)")
	assert.Equal(t, "a", bad[0].Earlier.Holder)
	assert.Equal(t, "c", bad[1].Later.Holder)

	assert.Len(t, FencingOrder([]Grant{{"a", 0, 4}, {"b", ms, 4}}), 1, "equal tokens are not strictly increasing")
}

func TestStaleWrites(t *testing.T) {
	assert.Empty(t, StaleWrites([]Write{{"a", 1, true}, {"a", 1, true}, {"b", 2, true}, {"a", 1, false}}))
	stale := StaleWrites([]Write{{"a", 1, true}, {"b", 2, true}, {"a", 1, true}})
	require.Len(t, stale, 1)
	assert.Equal(t, "a", stale[0].Holder)
}

func TestLongestGap(t *testing.T) {
	assert.Equal(t, 50*ms, LongestGap([]time.Duration{10 * ms, 20 * ms, 70 * ms}, 0, 100*ms))
	assert.Equal(t, 100*ms, LongestGap(nil, 0, 100*ms), "no grant at all")
	assert.Equal(t, 60*ms, LongestGap([]time.Duration{40 * ms, 200 * ms}, 0, 100*ms), "grants outside the window are ignored")
}

func TestLeftovers(t *testing.T) {
	assert.Empty(t, Leftovers(map[string][]string{"n1": nil}))
	assert.Equal(t, []string{"n1: a", "n2: b"}, Leftovers(map[string][]string{"n2": {"b"}, "n1": {"a"}}))
}
