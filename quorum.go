package redlock

// This file holds the counting of the nodes' answers to one operation and
// the decision "quorum reached" / "quorum impossible" as soon as either is
// certain (step 3 of the algorithm); fanout.go sends the operation and
// gathers the answers.

// quorum returns the number of nodes that must agree among n: a strict
// majority, so that any two quorums share at least one node.
func quorum(n int) int {
	return n/2 + 1
}

// vote is one node's answer to an operation.
type vote uint8

const (
	votePending vote = iota // no answer yet
	voteYes                 // the node did what was asked (set, extended, released)
	voteNo                  // the node answered and refused: the key is absent or holds another token
	voteFail                // no usable answer: timeout, connection or server error
)

// tally counts the votes of one operation over n nodes.
type tally struct {
	n, yes, no, fail int
}

func (t *tally) add(v vote) {
	switch v {
	case voteYes:
		t.yes++
	case voteNo:
		t.no++
	case voteFail:
		t.fail++
	}
}

// reached reports whether a quorum said yes.
func (t tally) reached() bool { return t.yes >= quorum(t.n) }

// impossible reports whether so many nodes refused or failed that a quorum
// of yes can no longer be reached.
func (t tally) impossible() bool { return t.no+t.fail > t.n-quorum(t.n) }

// decided reports whether the outcome is certain whatever the pending nodes say.
func (t tally) decided() bool { return t.reached() || t.impossible() }

// refusedByQuorum reports whether enough nodes answered "not ours" that a
// quorum cannot hold our token: the lock is provably lost. Failures do not
// count; they leave the question open.
func (t tally) refusedByQuorum() bool { return t.no > t.n-quorum(t.n) }

// unreachable reports whether failures alone make a quorum impossible: too
// few nodes answered at all.
func (t tally) unreachable() bool { return t.fail > t.n-quorum(t.n) }

// held is the stop condition of Extend and Unlock: a quorum said yes, or
// enough nodes said "not ours" that the lock is provably lost. Failures alone
// do not stop them early, so that lost and unreachable stay distinguishable.
func (t tally) held() bool { return t.reached() || t.refusedByQuorum() }

// answered and granted are the filters of awaitAnswered. A node whose op
// failed (timed out, paused, unreachable) would most likely cost the release
// a full timeout too (with a majority paused, it would double the time to
// error): its release finishes in the background.
func answered(r result) bool { return r.vote != voteFail }
func granted(r result) bool  { return r.vote == voteYes }
