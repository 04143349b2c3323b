package redlock

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Lock is a lock held on a quorum of nodes. It is safe for concurrent use by
// multiple goroutines. Holding a *Lock does not mean the lock is still held:
// it ends at Until at the latest, and earlier if nodes lose it.
type Lock struct {
	c      *Client
	key    string // as given by the caller
	name   string // the Redis key: prefix + key
	token  string
	waiter string // the id of the Lock call that acquired it in the nodes' queues; "" for TryLock
	fence  uint64 // the fencing token; 0 without WithFencing
	ttl    time.Duration
	acq    *fanout   // the successful acquire; later operations wait for its stragglers
	start  time.Time // when the successful attempt started (monotonic)

	// unlockMu serialises Unlock calls: once one has handed the lock over
	// (handed), the nodes where its release did not land keep this lock's
	// key for the heir, and no later Unlock may delete it there.
	unlockMu  sync.Mutex
	handed    *handoff // guarded by unlockMu
	handedErr error    // the handing Unlock's result; guarded by unlockMu

	mu       sync.Mutex // taken after the Client's watchdog mutex, never before it
	until    time.Time
	unlocked bool
	refused  bool          // an Extend found a quorum refusing: the lock is provably lost
	lost     error         // set once auto-extension (or a handoff's answer) gave the lock up; final
	ended    error         // why Done closed (Unlock, expiry, loss, Close); nil while open
	done     chan struct{} // created by the first Done call, or closed at the end
	watch    *watchEntry   // the watchdog's entry, once Done or KeepAlive was called; set once
	onEnd    func(error)   // called once when the lock ends (Do cancels fn's context)
}

// Key returns the key as given to TryLock or Lock (without the key prefix).
func (l *Lock) Key() string {
	if l == nil {
		return ""
	}
	return l.key
}

// Token returns the random value that identifies this holder on the nodes.
func (l *Lock) Token() string {
	if l == nil {
		return ""
	}
	return l.token
}

// Until returns the end of the lock's validity: the time after which
// another client may hold it. It is computed on the monotonic clock from the
// start of the successful attempt (or extension), minus the drift allowance;
// compare it with time.Now, not with a wall-clock time from elsewhere. A
// lock that this Client's Unlock handed to a waiting Lock call may start
// with the released lock's validity, if that covers at least half of the
// validity asked for; Until is raised once the nodes confirm the handoff
// (docs/design.md, "Waiting"). Until never moves earlier.
func (l *Lock) Until() time.Time {
	if l == nil {
		return time.Time{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.until
}

// Extend raises the remaining TTL of the lock to at least ttl on every node
// that still holds it, and moves Until to ttl (minus drift) after the start of
// the extension if that is later. It never shortens a node's TTL and never
// re-acquires a key that has lapsed.
//
// Extend succeeds only if a quorum holds the lock and accepts the extension
// before Until. It returns ErrLockLost when the lock is provably gone (Until
// passed, a quorum answered that the key is absent or holds another token,
// Unlock was called, or auto-extension declared the lock lost), and
// ErrQuorumUnreachable (with a *NodeError per failed node) when too few nodes
// answered; after any failure Until is unchanged. If ctx ends,
// errors.Is(err, ctx.Err()) holds.
func (l *Lock) Extend(ctx context.Context, ttl time.Duration) error {
	if err := l.check("Extend", ctx); err != nil {
		return err
	}
	c := l.c
	if err := c.checkTTL("Extend", ttl); err != nil {
		return err
	}
	ttl = wireTTL(ttl)
	start := c.cfg.clock.Now()
	l.mu.Lock()
	until, unlocked, lost := l.until, l.unlocked, l.lost
	l.mu.Unlock()
	switch {
	case unlocked:
		return fmt.Errorf("%w: %q was released by Unlock", ErrLockLost, l.key)
	case lost != nil:
		return lost
	case !start.Before(until):
		return fmt.Errorf("%w: %q expired at %v", ErrLockLost, l.key, until.Format(time.RFC3339Nano))
	}
	c.noteTTL(ttl) // the restart guard's default window is the longest TTL used
	errs, _ := c.extend(ctx, []extension{newExtension(l, ttl)}, false)
	return errs[0]
}

// extension asks for one lock's TTL to be raised to ttl (whole milliseconds).
// Auto-extension keeps one per lock and sends it every renewal period, so it
// holds what the per-node loop needs in one place: boxed script arguments,
// and once the acquire has settled everywhere, the nodes that refused it.
type extension struct {
	l    *Lock
	ttl  time.Duration
	args [3]interface{} // the Redis key, our token, ttl in ms
	// refused has bit i set if node i refused the acquire (our token was
	// never written there); valid once settled is true, for up to 64 nodes.
	refused uint64
	settled bool
}

func newExtension(l *Lock, ttl time.Duration) extension {
	return extension{l: l, ttl: ttl, args: [3]interface{}{l.name, l.token, ttl.Milliseconds()}}
}

// learnAcquire records which nodes refused the acquire, once it has settled
// on every node (it never blocks).
func (x *extension) learnAcquire() {
	acq := x.l.acq
	if x.settled || len(acq.slots) > 64 {
		return
	}
	var refused uint64
	acq.mu.Lock()
	defer acq.mu.Unlock()
	for i := range acq.slots {
		if !acq.slots[i].done {
			return // a straggler: extend waits for it
		}
		if acq.results[i].vote == voteNo {
			refused |= 1 << i
		}
	}
	x.refused, x.settled = refused, true
}

// extendOp is the node operation of extend: on each node, the extend script
// for every lock of the batch that node did not refuse. rows[i][j] is node
// i's vote on lock j, written before node i's result arrives.
type extendOp struct {
	exts []extension
	rows [][]vote
	sent [][]int // sent[i]: the locks sent to node i, in order
}

// settledOn reports whether every lock's acquire has settled on node i:
// extend never overtakes an acquire on a node (its own timeout bounds the
// wait), and skips nodes that refused it, where our token was never written.
func (o *extendOp) settledOn(i int) bool {
	for j := range o.exts {
		if x := &o.exts[j]; !x.settled && !x.l.acq.isDone(i) {
			return false
		}
	}
	return true
}

func (o *extendOp) waitOn(i int) {
	for j := range o.exts {
		if x := &o.exts[j]; !x.settled {
			x.l.acq.wait(i)
		}
	}
}

func (o *extendOp) prepare(i int, _ *result) (*script, []interface{}, result, bool) {
	row := make([]vote, len(o.exts))
	o.rows[i] = row
	args := make([]interface{}, 2, 2+3*len(o.exts))
	sent := make([]int, 0, len(o.exts))
	for j := range o.exts {
		x := &o.exts[j]
		if (!x.settled && x.l.acq.results[i].vote == voteNo) || (x.settled && x.refused&(1<<i) != 0) {
			row[j] = voteNo
			continue
		}
		row[j] = voteFail // unless the reply says otherwise
		sent = append(sent, j)
		args = append(args, x.args[0])
	}
	if len(sent) == 0 {
		return nil, nil, result{vote: voteNo}, false
	}
	o.sent[i] = sent
	args[0], args[1] = extendScript.hash, len(sent)
	for _, j := range sent {
		args = append(args, o.exts[j].args[1], o.exts[j].args[2])
	}
	return extendScript, args, result{}, true
}

func (o *extendOp) parse(i int, reply interface{}) result {
	sent := o.sent[i]
	flags, err := parseFlags("extend", reply, len(sent))
	if err != nil {
		return result{vote: voteFail, err: err}
	}
	for k, j := range sent {
		o.rows[i][j] = flags[k]
	}
	return result{vote: voteYes}
}

// extend runs the extend script for every lock in exts with one round trip
// per node, and settles each lock's outcome as Extend documents, as soon as
// that lock's outcome is certain. Extend sends one lock; auto-extension sends
// every lock due for renewal at once, so that many held locks stay cheap.
// It returns one error per lock and the fan-out, whose stragglers may still
// be in flight (nil if the Client is closed). Once every lock is settled, it
// reports each to the observer; renewal says auto-extension sent them.
func (c *Client) extend(ctx context.Context, exts []extension, renewal bool) ([]error, *fanout) {
	errs := make([]error, len(exts))
	if err := c.begin(); err != nil {
		for j := range errs {
			errs[j] = err
		}
		return errs, nil
	}
	defer c.wg.Done()

	timeout := time.Duration(1<<63 - 1)
	untils := make([]time.Time, len(exts))
	for j, x := range exts {
		timeout = min(timeout, c.cfg.nodeTimeoutFor(x.ttl))
		untils[j] = x.l.Until()
	}
	op := &extendOp{exts: exts, rows: make([][]vote, len(c.nodes)), sent: make([][]int, len(c.nodes))}
	start := c.cfg.clock.Now()
	f := c.start(ctx, timeout, nil, op)
	rows := op.rows
	tallies := make([]tally, len(exts))
	votes := make([][]vote, len(exts)) // votes[j][i]: node i's vote on lock j, once arrived
	for j := range exts {
		tallies[j].n = len(c.nodes)
		votes[j] = make([]vote, len(c.nodes))
	}
	settled := make([]bool, len(exts))
	settle := func(j int) {
		x := exts[j]
		errs[j] = x.l.settleExtend(ctx, start, untils[j], x.ttl, tallies[j], f.failures(votes[j]))
		settled[j] = true
	}
	left := len(exts)
	for got := 0; got < len(c.nodes) && left > 0; got++ {
		i := f.next()
		row := rows[i] // nil if node i was cancelled before anything was prepared for it
		for j := range exts {
			if settled[j] {
				continue
			}
			v := voteFail
			if row != nil {
				v = row[j]
			}
			votes[j][i] = v
			tallies[j].add(v)
			if tallies[j].held() {
				settle(j)
				left--
			}
		}
	}
	for j := range exts {
		if !settled[j] {
			settle(j)
		}
	}
	for _, err := range errs {
		if err == nil {
			// As after a won acquire: a node still on the blocking path
			// (behind the acquire's straggler) goes on if ctx ends now.
			f.kept.Store(true)
			break
		}
	}
	if obs := c.cfg.obs.Extend; obs != nil {
		now := c.cfg.clock.Now()
		for j, x := range exts {
			obs(ExtendEvent{Key: x.l.key, TTL: x.ttl, Renewal: renewal, Outcome: outcomeOf(ctx, errs[j]),
				Elapsed: now.Sub(start), Validity: x.l.Until().Sub(now), Nodes: c.nodeVotes(f, votes[j]), Err: errs[j]})
		}
	}
	return errs, f
}

// settleExtend decides the outcome of one extension to ttl that started at
// start, while the lock was valid until until, from its tally (the decision
// of Extend): on success it moves Until forward (never back).
func (l *Lock) settleExtend(ctx context.Context, start, until time.Time, ttl time.Duration, t tally, failed []error) error {
	c := l.c
	now := c.cfg.clock.Now()
	switch {
	case t.reached() && now.Before(until):
		newUntil := start.Add(ttl - drift(ttl, c.cfg.driftFactor))
		l.mu.Lock()
		if newUntil.After(l.until) {
			l.until = newUntil
		}
		l.mu.Unlock()
		return nil
	case t.reached():
		return newOpError(ctx, "extension reached a quorum only after the lock's validity ended", l.key, []error{ErrLockLost}, t, failed)
	case t.refusedByQuorum():
		l.mu.Lock()
		l.refused = true // Unlock hands no heir this lock's validity
		l.mu.Unlock()
		return newOpError(ctx, "lock lost: a quorum no longer holds it", l.key, []error{ErrLockLost}, t, failed)
	case !now.Before(until):
		return newOpError(ctx, "lock expired during the extension", l.key, []error{ErrLockLost}, t, failed)
	case ctx.Err() != nil:
		return newOpError(ctx, "extension cancelled", l.key, nil, t, failed)
	}
	return newOpError(ctx, "extension failed: quorum unreachable", l.key, []error{ErrQuorumUnreachable}, t, failed)
}

// Unlock releases the lock on every node that holds it, comparing the token
// so that a key now held by another owner is never deleted. It runs under its
// own per-node timeouts even when ctx is already cancelled, so that
// `defer l.Unlock(ctx)` always releases. It returns once a quorum has
// released and every node that granted the lock has answered its release,
// so that a TryLock that follows finds the key free (unless Lock calls wait
// for it: see below and Client.Lock); a node that never
// answered the acquire (a paused one) is released in the background, bounded
// by its timeouts.
//
// It returns nil if a quorum released the lock, an error matching ErrLockLost
// if the lock was no longer held (so many nodes answered "not ours" that no
// quorum held it, or Until had passed), and one matching ErrQuorumUnreachable
// when too few nodes answered to tell. Unlock may be called again, for
// example after ErrQuorumUnreachable; every call attempts every node,
// except after an Unlock that handed the lock over (below): then it
// returns an error matching ErrLockLost and leaves the nodes alone.
//
// If a Lock call of the same Client waits for this key behind this lock,
// Unlock may hand the lock straight to it: the nodes that release then set
// the key to that call's token instead of deleting it (docs/design.md,
// "Waiting"); for every other caller the key is as held as before. That
// call may hold the lock before the nodes have answered, on this lock's
// validity: if they then report this lock lost, Unlock returns an error
// matching ErrLockLost and that call's lock ends as lost too (its Done is
// closed).
//
// Unlock first stops auto-extension (KeepAlive, Do) for good: if a renewal is
// in flight, it waits for that renewal's round trips to end (at most one
// per-node timeout) before sending the release, so that no renewal is ever
// sent once Unlock has returned. It then closes Done.
func (l *Lock) Unlock(ctx context.Context) error {
	if err := l.check("Unlock", ctx); err != nil {
		return err
	}
	c := l.c
	l.unlockMu.Lock()
	defer l.unlockMu.Unlock()
	if l.handed != nil {
		// Where the handing release did not land, this lock's key is what
		// the heir may still rely on: leave it to its TTL.
		return fmt.Errorf("%w: %q was handed over by an earlier Unlock to another Lock call of this Client (that Unlock returned: %v); nodes its release did not reach keep the key until its TTL", ErrLockLost, l.key, l.handedErr)
	}
	l.mu.Lock()
	l.unlocked = true
	e := l.watch
	l.mu.Unlock()
	if e != nil {
		// Redisson's watchdog could renew after unlock() and keep an orphan
		// alive forever; here the entry leaves the schedule under the
		// watchdog's mutex, so no new renewal can start, and we wait out the
		// one that may have started before.
		if inflight := c.wd.stop(e); inflight != nil {
			<-inflight
		}
	}
	l.finish(fmt.Errorf("%w: %q was released by Unlock", ErrLockLost, l.key), false)
	l.mu.Lock()
	until, lost := l.until, l.lost != nil || l.refused
	l.mu.Unlock()
	if err := c.begin(); err != nil {
		return err
	}
	defer c.wg.Done()

	ctx = context.WithoutCancel(ctx)
	start := c.cfg.clock.Now()
	// With the pipelined transport, the next Lock call of this Client
	// waiting behind this lock may inherit it: the release hands it the
	// key (handoff.go), or with fencing keeps the key for it while it
	// queues its attempt right behind the release.
	var heir *handoff
	if !c.cfg.noPipeline {
		if heir = c.queue.heir(l.name, l.token, !c.cfg.fencing, start, len(c.nodes)); heir != nil && heir.token != "" {
			c.noteTTL(heir.heir.ttl) // before the nodes grant it (guard.go)
			// The heir may start on our validity unless we know the
			// lock lost (then it waits for the nodes' answer).
			if !lost {
				heir.prev = until
			}
		}
	}
	f := c.release(ctx, l.acq, l.name, l.token, l.waiter, heir, c.cfg.nodeTimeoutFor(l.ttl))
	orphan := false
	if heir != nil {
		heir.f = f
		orphan = !c.queue.kick(heir) && heir.token != ""
		if !orphan && !heir.prev.IsZero() {
			l.handed = heir // the heir may start on our keys
		}
	}
	t, votes := f.collect(tally.held)
	// Returning at the quorum would leave the other nodes that granted us
	// still holding the key for a moment, and a TryLock that follows this
	// Unlock could be refused by them: wait for those releases too (a node
	// that never answered the acquire is not waited for).
	f.awaitAnswered(l.acq, granted)
	if orphan { // the heir left before it was told
		c.unhand(ctx, l.name, heir)
	}
	if l.waiter != "" && f.othersQueued() {
		c.queue.othersWait(l.name)
	}
	now := c.cfg.clock.Now()
	expired := !now.Before(until)
	var err error
	switch {
	case t.reached() && !expired:
	case t.reached() || (expired && !t.refusedByQuorum()):
		err = newOpError(ctx, "released, but the lock's validity had already ended", l.key, []error{ErrLockLost}, t, f.failures(votes))
	case t.refusedByQuorum():
		err = newOpError(ctx, "lock lost before Unlock: a quorum no longer held it", l.key, []error{ErrLockLost}, t, f.failures(votes))
	default:
		err = newOpError(ctx, "unlock incomplete: quorum unreachable", l.key, []error{ErrQuorumUnreachable}, t, f.failures(votes))
	}
	if obs := c.cfg.obs.Unlock; obs != nil {
		obs(UnlockEvent{Key: l.key, Outcome: outcomeOf(ctx, err), Elapsed: now.Sub(start), Held: now.Sub(l.start), Nodes: c.nodeVotes(f, votes), Err: err})
	}
	if l.handed != nil {
		l.handedErr = err
	}
	return err
}

// check validates the receiver and context of a Lock method.
func (l *Lock) check(op string, ctx context.Context) error {
	switch {
	case l == nil || l.c == nil:
		return fmt.Errorf("redlock: %s on a nil or zero *Lock (obtain locks from Client.TryLock or Client.Lock)", op)
	case ctx == nil:
		return fmt.Errorf("redlock: %s: nil context", op)
	}
	return nil
}
