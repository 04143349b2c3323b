// Package checker holds the chaos suite's safety and liveness checkers. They
// are pure functions over recorded histories, so that each can be tested on
// hand-made good and bad histories before it is trusted to judge a real run:
// a checker that cannot fail proves nothing.
//
// All instants are durations since one common epoch read from one monotonic
// clock (the test process's), so intervals recorded by different clients of
// the same process compare exactly.
package checker

import (
	"fmt"
	"sort"
	"time"
)

// Hold is one critical section: a holder of Key was granted the lock at
// Grant, believed it valid until Until (its validity deadline) and left its
// critical section at End.
type Hold struct {
	Key    string
	Holder string // unique per acquisition (the lock token)
	Grant  time.Duration
	End    time.Duration
	Until  time.Duration
}

// valid returns the end of the part of the critical section covered by the
// holder's validity.
func (h Hold) valid() time.Duration { return min(h.End, h.Until) }

// Violation is an overlap of two different holders' valid critical sections
// on one key: the lock's safety property failed.
type Violation struct {
	A, B    Hold
	Overlap time.Duration
}

func (v Violation) String() string {
	return fmt.Sprintf("key %q: %s [%v, %v] overlaps %s [%v, %v] by %v",
		v.A.Key, v.A.Holder, v.A.Grant, v.A.valid(), v.B.Holder, v.B.Grant, v.B.valid(), v.Overlap)
}

// Overrun is a holder that stayed in its critical section past its own
// validity deadline. It is not a failure of the lock (a lease cannot stop a
// paused holder) but of the holder; Next names a later holder it overlapped,
// if any — the case that only fencing makes safe.
type Overrun struct {
	Hold Hold
	By   time.Duration
	Next *Hold
}

// MutualExclusion checks that no two different holders of the same key were
// in their critical sections at once while both believed the lock valid
// (interval [Grant, min(End, Until)]). Holders that ran past Until are
// reported as overruns, separately.
func MutualExclusion(holds []Hold) (violations []Violation, overruns []Overrun) {
	byKey := map[string][]Hold{}
	for _, h := range holds {
		byKey[h.Key] = append(byKey[h.Key], h)
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		hs := byKey[k]
		sort.SliceStable(hs, func(i, j int) bool { return hs[i].Grant < hs[j].Grant })
		// Sweep in grant order, keeping the valid interval that reaches
		// furthest: any later grant before its end overlaps it.
		var reach *Hold
		for i := range hs {
			h := hs[i]
			if reach != nil && reach.Holder != h.Holder && h.Grant < reach.valid() && h.Grant < h.valid() {
				violations = append(violations, Violation{A: *reach, B: h, Overlap: min(reach.valid(), h.valid()) - h.Grant})
			}
			if reach == nil || h.valid() > reach.valid() {
				reach = &hs[i]
			}
		}
		for i, h := range hs {
			if h.End <= h.Until {
				continue
			}
			o := Overrun{Hold: h, By: h.End - h.Until}
			for j := i + 1; j < len(hs); j++ {
				if hs[j].Holder != h.Holder && hs[j].Grant < h.End {
					next := hs[j]
					o.Next = &next
					break
				}
			}
			overruns = append(overruns, o)
		}
	}
	return violations, overruns
}

// Increment is one read-modify-write of the shared counter done under the
// lock: the holder read Read, paused, and wrote Read+1. Acked is true when
// the write completed and the holder counted it as done.
type Increment struct {
	Holder string
	Read   int64
	Acked  bool
}

// LostUpdateReport compares acknowledged increments with the final value.
type LostUpdateReport struct {
	Acked int64 // increments acknowledged
	Final int64 // the counter's final value
	// Lost is Acked − Final: acknowledged increments that the final value
	// does not reflect (two holders read the same value).
	Lost int64
	// SameRead lists values read by more than one acknowledged increment:
	// each such pair overwrote one another.
	SameRead []int64
}

// OK reports whether no update was lost.
func (r LostUpdateReport) OK() bool { return r.Lost == 0 && len(r.SameRead) == 0 }

// LostUpdates checks a counter incremented under the lock: with mutual
// exclusion every acknowledged increment read a distinct value and the final
// value equals their number.
func LostUpdates(incs []Increment, final int64) LostUpdateReport {
	r := LostUpdateReport{Final: final}
	seen := map[int64]int{}
	for _, in := range incs {
		if !in.Acked {
			continue
		}
		r.Acked++
		seen[in.Read]++
		if seen[in.Read] == 2 {
			r.SameRead = append(r.SameRead, in.Read)
		}
	}
	sort.Slice(r.SameRead, func(i, j int) bool { return r.SameRead[i] < r.SameRead[j] })
	r.Lost = r.Acked - final
	return r
}

// Grant is one successful acquisition with its fencing token.
type Grant struct {
	Holder string
	At     time.Duration // when the grant was observed
	Token  uint64
}

// FenceViolation is a grant whose token does not exceed an earlier grant's.
type FenceViolation struct {
	Earlier, Later Grant
}

// FencingOrder checks that fencing tokens strictly increase in grant order
// for grants of one key. Grants are given in any order and sorted by At.
func FencingOrder(grants []Grant) []FenceViolation {
	gs := append([]Grant(nil), grants...)
	sort.SliceStable(gs, func(i, j int) bool { return gs[i].At < gs[j].At })
	var out []FenceViolation
	for i := 1; i < len(gs); i++ {
		// Compare with the largest token so far: a dip below any earlier
		// grant is a violation, even if it exceeds its direct predecessor.
		best := gs[0]
		for _, g := range gs[:i] {
			if g.Token > best.Token {
				best = g
			}
		}
		if gs[i].Token <= best.Token {
			out = append(out, FenceViolation{Earlier: best, Later: gs[i]})
		}
	}
	return out
}

// Write is one write attempt on a fenced resource, in the order the
// resource processed them.
type Write struct {
	Holder   string
	Token    uint64
	Accepted bool
}

// StaleWrites returns the accepted writes whose token is lower than a token
// the resource had already accepted: a fenced resource must reject them.
func StaleWrites(writes []Write) []Write {
	var out []Write
	var max uint64
	var any bool
	for _, w := range writes {
		if !w.Accepted {
			continue
		}
		if any && w.Token < max {
			out = append(out, w)
			continue
		}
		max, any = w.Token, true
	}
	return out
}

// LongestGap returns the longest interval within [from, to] during which no
// grant happened: with a majority of nodes up, contenders must keep
// acquiring, so the gap must stay below a bound the scenario chooses.
func LongestGap(grants []time.Duration, from, to time.Duration) time.Duration {
	ts := append([]time.Duration(nil), grants...)
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	prev, gap := from, time.Duration(0)
	for _, t := range ts {
		if t < from || t > to {
			continue
		}
		gap = max(gap, t-prev)
		prev = t
	}
	return max(gap, to-prev)
}

// Leftovers returns "node: key" for every lock key still present on a node
// after quiescence plus one TTL: cleanup failed there.
func Leftovers(keysByNode map[string][]string) []string {
	var out []string
	for n, ks := range keysByNode {
		for _, k := range ks {
			out = append(out, n+": "+k)
		}
	}
	sort.Strings(out)
	return out
}
