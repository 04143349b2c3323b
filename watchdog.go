package redlock

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// This file holds auto-extension: the Client's renewal scheduler (the
// watchdog), Lock.KeepAlive and Lock.Done. One goroutine per Client keeps a
// min-heap of due times for every watched lock and sleeps on one timer until
// the earliest; renewals run on a few worker goroutines and carry every lock
// due at about the same time in one extend script per node, so that thousands
// of held locks cost a handful of round trips per renewal period. The loss
// deadline of a lock is a due time in the same heap: it fires whether or not
// a renewal is stuck on a slow node, because the scheduler never waits for
// the network.

// Defaults of auto-extension.
const (
	// RenewalDivisor sets the renewal period of auto-extension: a lock is
	// renewed every ttl/RenewalDivisor, counted from the start of its last
	// successful renewal (or acquisition). A renewal due within
	// ttl/RenewalEarlyDivisor of another may be sent with it, a little early,
	// so that locks share round trips.
	RenewalDivisor = 3
	// RenewalEarlyDivisor: see RenewalDivisor.
	RenewalEarlyDivisor = 12

	// LossMarginTimeouts and LossMarginDivisor define the default loss
	// margin; see LossMargin.
	LossMarginTimeouts = 2
	LossMarginDivisor  = 10
)

// Renewal scheduling limits.
const (
	renewBatchMax = 512 // locks per renewal round trip (keys per extend script)
	renewWorkers  = 4   // renewal fan-outs in flight at once, per Client
)

// LossMargin returns the default loss margin of auto-extension for a lock
// with ttl whose operations use nodeTimeout: the larger of
// LossMarginTimeouts × nodeTimeout and ttl/LossMarginDivisor. For a 10 s TTL
// with the default per-node timeout (1 s) it is 2 s; for 1 s it is 200 ms.
//
// When no renewal has moved Until by Until − margin, auto-extension declares
// the lock lost: there is still time for the holder to stop touching the
// protected resource (two node timeouts cover a renewal whose answer is in
// flight and the holder's reaction), and the margin grows with the TTL to
// absorb scheduling delays on a busy client.
func LossMargin(ttl, nodeTimeout time.Duration) time.Duration {
	return max(LossMarginTimeouts*nodeTimeout, ttl/LossMarginDivisor)
}

// renewBackoff returns the pause before retrying a renewal after the
// failures-th consecutive failure that left the lock's fate open (quorum
// unreachable): ttl/30 doubling up to ttl/10, so that a retry or two still
// fit between the renewal time and the loss deadline.
func renewBackoff(ttl time.Duration, failures int) time.Duration {
	d := max(ttl/30, time.Millisecond) << min(max(failures-1, 0), 2)
	return min(d, max(ttl/10, time.Millisecond))
}

// checkKeepAlive rejects a TTL for which the loss margin and the drift
// allowance leave less than half the TTL: the first renewal (at a third of
// the TTL) would leave no time for a retry before the loss deadline.
func (c *Client) checkKeepAlive(op string, ttl time.Duration) error {
	ttl = wireTTL(ttl)
	m, d := c.cfg.lossMarginFor(ttl), drift(ttl, c.cfg.driftFactor)
	if ttl-d-m < ttl/2 {
		return fmt.Errorf("redlock: %s: ttl %v is too short for auto-extension: the loss margin (%v, at least %d per-node timeouts of %v) and the drift allowance (%v) leave less than half of it; use a longer ttl, WithNodeTimeout or WithLossMargin",
			op, ttl, m, LossMarginTimeouts, c.cfg.nodeTimeoutFor(ttl), d)
	}
	return nil
}

// watchEntry is a lock watched by the watchdog: for expiry only (Done was
// called) or kept alive (KeepAlive). Its fields are guarded by watchdog.mu.
type watchEntry struct {
	l     *Lock
	index int       // position in the heap; -1 when not in it
	due   time.Time // when the scheduler must look at it next
	early time.Duration

	keepAlive bool
	margin    time.Duration // loss margin: the deadline is Until − margin
	renewAt   time.Time     // next renewal
	limit     time.Time     // WithMaxHold: no renewal may move Until past it; zero: none
	capped    bool          // the limit stopped renewals: the lock runs out
	failures  int           // consecutive renewals that left the fate open
	lastErr   error         // the last failed renewal's error, reported with a loss
	ext       extension     // what each renewal sends, built once

	// inflight is non-nil from the moment a renewal carrying this lock is
	// queued until every round trip of that renewal has ended; claimed says
	// a worker has taken it (before that, stop can simply drop it).
	inflight chan struct{}
	claimed  bool
	stopped  bool // Unlock, loss, expiry or Close: never scheduled again
}

// watchHeap orders entries by due time (container/heap).
type watchHeap []*watchEntry

func (h watchHeap) Len() int           { return len(h) }
func (h watchHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h watchHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *watchHeap) Push(x any) {
	e := x.(*watchEntry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *watchHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.index = -1
	return e
}

// watchdog is a Client's renewal scheduler. Its goroutine starts with the
// first watched lock; Client.Close stops it and its workers and waits for
// them. Lock order: watchdog.mu, then Lock.mu; never the reverse.
type watchdog struct {
	c *Client

	mu      sync.Mutex
	heap    watchHeap
	queue   []*watchEntry // renewals due, not yet claimed by a worker
	workers int
	running bool
	closed  bool
	ctx     context.Context // cancelled by close: ends renewals in flight
	cancel  context.CancelFunc
	wake    chan struct{} // buffered 1: the heap's head may have changed
	wg      sync.WaitGroup
}

func newWatchdog(c *Client) *watchdog {
	return &watchdog{c: c, wake: make(chan struct{}, 1)}
}

// ending is a lock to end once the watchdog's mutex is released.
type ending struct {
	l    *Lock
	err  error
	lost bool
}

func (x ending) run() { x.l.finish(x.err, x.lost) }

// add puts e on the schedule, starting the scheduler if needed. It does
// nothing if e was stopped meanwhile (Unlock got there first).
func (w *watchdog) add(e *watchEntry) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	if e.stopped {
		return nil
	}
	if !w.running {
		w.running = true
		w.ctx, w.cancel = context.WithCancel(context.Background())
		w.wg.Add(1)
		go w.run()
	}
	w.schedule(e)
	return nil
}

// schedule (re)computes e's due time from its state and the lock's Until,
// and puts it in the heap. Called with w.mu held.
func (w *watchdog) schedule(e *watchEntry) {
	e.l.mu.Lock()
	deadline := e.l.until
	e.l.mu.Unlock()
	if e.keepAlive {
		deadline = deadline.Add(-e.margin)
	}
	e.due, e.early = deadline, 0
	if e.keepAlive && e.inflight == nil && !e.capped && e.renewAt.Before(deadline) {
		e.due, e.early = e.renewAt, e.l.ttl/RenewalEarlyDivisor
	}
	if e.index >= 0 {
		heap.Fix(&w.heap, e.index)
	} else {
		heap.Push(&w.heap, e)
	}
	w.poke()
}

func (w *watchdog) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// stop takes e off the schedule for good and returns the channel to wait on
// if a renewal carrying it has been claimed by a worker (nil otherwise).
func (w *watchdog) stop(e *watchEntry) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	e.stopped = true
	if e.index >= 0 {
		heap.Remove(&w.heap, e.index)
	}
	if e.inflight != nil && !e.claimed {
		// Queued but not sent: the worker will skip it.
		close(e.inflight)
		e.inflight = nil
	}
	return e.inflight
}

// run is the scheduler loop: one goroutine and one timer for all locks.
func (w *watchdog) run() {
	defer w.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		w.mu.Lock()
		if w.closed {
			w.mu.Unlock()
			return
		}
		ends, wait := w.sweep(w.c.cfg.clock.Now())
		w.mu.Unlock()
		for _, x := range ends {
			x.run()
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-w.wake:
		case <-w.ctx.Done():
			return
		}
	}
}

// sweep handles every entry whose time has come: it ends locks whose
// deadline passed (loss for kept-alive locks, expiry for watched ones) and
// queues due renewals for the workers. It returns the locks to end and how
// long to sleep. Called with w.mu held.
func (w *watchdog) sweep(now time.Time) ([]ending, time.Duration) {
	// Wake up when the head is due, then also take every renewal due within
	// its early window: renewing those a little early lets them share this
	// round trip, and locks renewed together stay together.
	if w.heap.Len() > 0 && now.Before(w.heap[0].due) {
		return nil, w.heap[0].due.Sub(now)
	}
	var due []*watchEntry
	for w.heap.Len() > 0 && !now.Before(w.heap[0].due.Add(-w.heap[0].early)) {
		due = append(due, heap.Pop(&w.heap).(*watchEntry))
	}
	var ends []ending
	for _, e := range due {
		l := e.l
		l.mu.Lock()
		until := l.until
		l.mu.Unlock()
		if !e.keepAlive {
			if !now.Before(until) {
				e.stopped = true
				ends = append(ends, ending{l: l, err: fmt.Errorf("%w: %q expired at %v", ErrLockLost, l.key, until.Format(time.RFC3339Nano))})
				continue
			}
		} else if !now.Before(until.Add(-e.margin)) {
			// The loss deadline: no renewal moved Until in time. Final, even
			// if a renewal in flight succeeds later (its outcome is ignored).
			e.stopped = true
			ends = append(ends, ending{l: l, err: e.lossError(until), lost: true})
			continue
		} else if e.inflight == nil && !e.capped && !now.Before(e.renewAt.Add(-l.ttl/RenewalEarlyDivisor)) {
			ttl := l.ttl - drift(l.ttl, w.c.cfg.driftFactor)
			if !e.limit.IsZero() && now.Add(ttl).After(e.limit) {
				e.capped = true // let it run out; the loss deadline reports it
			} else {
				e.inflight, e.claimed = make(chan struct{}), false
				w.queue = append(w.queue, e)
			}
		}
		w.schedule(e) // strictly later than now: each entry is handled once per sweep
	}
	need := (len(w.queue) + renewBatchMax - 1) / renewBatchMax
	for ; need > 0 && w.workers < renewWorkers; need-- {
		w.workers++
		w.wg.Add(1)
		go w.work()
	}
	wait := time.Hour
	if w.heap.Len() > 0 {
		wait = max(w.heap[0].due.Sub(now), time.Millisecond)
	}
	return ends, wait
}

// lossError explains why a kept-alive lock was given up. Called with w.mu held.
func (e *watchEntry) lossError(until time.Time) error {
	l := e.l
	var err error
	switch {
	case e.capped:
		err = fmt.Errorf("%w: %q: auto-extension reached its limit (WithMaxHold) and the lock ran out (valid until %v)",
			ErrLockLost, l.key, until.Format(time.RFC3339Nano))
	default:
		err = fmt.Errorf("%w: %q: no renewal succeeded before the loss deadline (Until %v minus the %v margin)",
			ErrLockLost, l.key, until.Format(time.RFC3339Nano), e.margin)
	}
	if e.lastErr != nil {
		err = fmt.Errorf("%w; last renewal: %w", err, e.lastErr)
	}
	return err
}

// work renews queued locks, one batch at a time, until the queue is empty.
func (w *watchdog) work() {
	defer w.wg.Done()
	for {
		w.mu.Lock()
		var batch []*watchEntry
		for len(w.queue) > 0 && len(batch) < renewBatchMax {
			e := w.queue[0]
			w.queue[0] = nil
			w.queue = w.queue[1:]
			if e.stopped { // Unlock, loss or Close before a worker took it: never sent
				if e.inflight != nil {
					close(e.inflight)
					e.inflight = nil
				}
				continue
			}
			e.claimed = true
			batch = append(batch, e)
		}
		if len(batch) == 0 {
			w.queue = nil // release the backing array
			w.workers--
			w.mu.Unlock()
			return
		}
		ctx := w.ctx
		w.mu.Unlock()
		w.renew(ctx, batch)
	}
}

// renew extends every lock of batch in one round trip per node and applies
// the outcomes: a success schedules the next renewal a period after this
// one's start, ErrLockLost ends the lock at once, anything else (quorum
// unreachable, a node timeout) is retried after a short backoff while the
// loss deadline has not passed.
func (w *watchdog) renew(ctx context.Context, batch []*watchEntry) {
	exts := make([]extension, len(batch))
	for j, e := range batch {
		e.ext.learnAcquire() // only this worker touches e.ext while e is claimed
		exts[j] = e.ext
	}
	start := w.c.cfg.clock.Now()
	errs, f := w.c.extend(ctx, exts, true)
	if f != nil {
		// No renewal round trip may outlive the in-flight mark that Unlock
		// waits on: a straggler could otherwise be sent after Unlock returned.
		f.waitAll()
	}
	now := w.c.cfg.clock.Now()

	var ends []ending
	w.mu.Lock()
	for j, e := range batch {
		close(e.inflight)
		e.inflight, e.claimed = nil, false
		if e.stopped {
			continue // Unlock, loss or Close while in flight: the outcome no longer matters
		}
		ttl := e.l.ttl
		switch err := errs[j]; {
		case err == nil:
			e.failures, e.lastErr = 0, nil
			e.renewAt = start.Add(ttl / RenewalDivisor)
		case errors.Is(err, ErrLockLost):
			e.stopped = true
			if e.index >= 0 {
				heap.Remove(&w.heap, e.index)
			}
			ends = append(ends, ending{l: e.l, err: err, lost: true})
			continue
		default:
			e.failures++
			e.lastErr = err
			e.renewAt = now.Add(renewBackoff(ttl, e.failures))
		}
		if !w.closed {
			w.schedule(e)
		}
	}
	w.mu.Unlock()
	for _, x := range ends {
		x.run()
	}
}

// close stops the scheduler and its workers, waits for them, and ends every
// watched lock: kept-alive ones are lost (no one renews them any more),
// watched ones can no longer be tracked. Called by Client.Close.
func (w *watchdog) close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	entries := append([]*watchEntry(nil), w.heap...)
	for _, e := range entries {
		e.stopped = true
		e.index = -1
	}
	w.heap = nil
	if w.cancel != nil {
		w.cancel()
	}
	w.mu.Unlock()
	w.wg.Wait()
	for _, e := range entries {
		l := e.l
		if e.keepAlive {
			l.finish(fmt.Errorf("%w: %q: auto-extension stopped by Client.Close: %w", ErrLockLost, l.key, ErrClosed), true)
		} else {
			l.finish(fmt.Errorf("%q: %w", l.key, ErrClosed), false)
		}
	}
}

// KeepAlive turns on auto-extension for a lock obtained with TryLock or
// Lock: the Client's watchdog renews it by quorum (as Extend does, to the
// lock's original TTL) every ttl/RenewalDivisor, retries a renewal that could
// not reach a quorum after a short backoff, and keeps going until Unlock or
// until the lock is lost. It returns at once; the renewals run in the
// background and share round trips with the Client's other kept-alive locks.
//
// The lock is lost, and Done is closed, when a renewal finds it provably gone
// (ErrLockLost), or when Until − margin arrives without a renewal having moved
// Until (the margin is LossMargin, or WithLossMargin), whichever comes first.
// The deadline is kept by a timer that does not wait for renewal round trips.
// A loss is final: renewals stop, and Extend returns the loss error. A
// process that is itself paused (GC, a stopped VM) past the deadline learns
// of the loss late, after another holder may have taken the lock: only
// fencing of the protected resource covers that case. WithMaxHold caps how
// long a lock is kept alive. Client.Close ends auto-extension and closes Done.
//
// KeepAlive returns nil if auto-extension is on (calling it again is
// harmless). It returns an error matching ErrLockLost if the lock was
// unlocked, lost, or is already past Until − margin; ErrClosed if the Client
// is closed; and an error for a TTL too short for auto-extension (see
// WithLossMargin). It is safe for concurrent use.
func (l *Lock) KeepAlive() error {
	return l.keepAlive("KeepAlive", nil)
}

// keepAlive is KeepAlive, with onEnd installed as the lock's end hook.
func (l *Lock) keepAlive(op string, onEnd func(error)) error {
	if l == nil || l.c == nil {
		return fmt.Errorf("redlock: %s on a nil or zero *Lock (obtain locks from Client.TryLock or Client.Lock)", op)
	}
	c := l.c
	if err := c.checkKeepAlive(op, l.ttl); err != nil {
		return err
	}
	margin := c.cfg.lossMarginFor(l.ttl)
	now := c.cfg.clock.Now()
	l.mu.Lock()
	var err error
	switch {
	case l.unlocked:
		err = fmt.Errorf("%w: %q was released by Unlock", ErrLockLost, l.key)
	case l.lost != nil:
		err = l.lost
	case !now.Before(l.until.Add(-margin)):
		err = fmt.Errorf("%w: %q: too close to expiry for auto-extension (valid until %v, loss margin %v)",
			ErrLockLost, l.key, l.until.Format(time.RFC3339Nano), margin)
	}
	if err != nil {
		l.mu.Unlock()
		return err
	}
	if onEnd != nil {
		l.onEnd = onEnd
	}
	if l.watch == nil {
		l.watch = &watchEntry{l: l, index: -1}
	}
	e := l.watch
	ext := newExtension(l, l.ttl)
	// The last renewal (or the acquisition) started at Until − (ttl − drift).
	last := l.until.Add(-(l.ttl - drift(l.ttl, c.cfg.driftFactor)))
	l.mu.Unlock()

	w := c.wd
	w.mu.Lock()
	switch {
	case w.closed:
		w.mu.Unlock()
		return fmt.Errorf("redlock: %s: %w", op, ErrClosed)
	case e.stopped:
		w.mu.Unlock()
		l.mu.Lock()
		err := l.ended
		l.mu.Unlock()
		if err == nil { // Unlock is on its way
			err = fmt.Errorf("%w: %q was released by Unlock", ErrLockLost, l.key)
		}
		return err
	case e.keepAlive:
		w.mu.Unlock()
		return nil
	}
	e.keepAlive, e.margin, e.ext = true, margin, ext
	e.renewAt = last.Add(l.ttl / RenewalDivisor)
	if c.cfg.maxHold > 0 {
		e.limit = now.Add(c.cfg.maxHold)
	}
	w.mu.Unlock()
	return w.add(e)
}

// Done returns a channel that is closed when the lock ends:
//
//   - when Unlock is called (once any renewal in flight has ended, before the
//     release is sent);
//   - without auto-extension, when Until passes (as extended by Extend);
//   - with auto-extension (KeepAlive, Do), when the lock is lost: a renewal
//     found it gone, or Until − margin arrived without a renewal having
//     moved Until (see KeepAlive) — so Done closes before Until;
//   - when the Client is closed.
//
// Done is closed at most once and never reopened. The channel is observed by
// the Client's watchdog goroutine, not by polling the nodes: without
// auto-extension, a lock that nodes lose early (a restart without
// persistence) is noticed only at Until. A process paused past the deadline
// sees the channel closed late. Done on a nil *Lock returns a closed
// channel. It is safe for concurrent use.
func (l *Lock) Done() <-chan struct{} {
	if l == nil || l.c == nil {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	l.mu.Lock()
	if l.done == nil {
		l.done = make(chan struct{})
		if l.ended != nil {
			close(l.done)
		}
	}
	done := l.done
	e := l.watch
	// Unlock reads l.watch in the same critical section as it sets unlocked,
	// so an entry made here is either seen and stopped by Unlock or not made.
	register := e == nil && l.ended == nil && !l.unlocked
	if register {
		e = &watchEntry{l: l, index: -1}
		l.watch = e
	}
	l.mu.Unlock()
	if register {
		if err := l.c.wd.add(e); err != nil {
			l.finish(fmt.Errorf("%q: %w", l.key, err), false)
		}
	}
	return done
}

// finish ends the lock once: it records why, marks it lost if lost, closes
// Done and calls the end hook (Do's cancellation of fn's context). Called
// without any mutex held.
func (l *Lock) finish(err error, lost bool) {
	l.mu.Lock()
	if l.ended != nil {
		l.mu.Unlock()
		return
	}
	l.ended = err
	if lost {
		l.lost = err
	}
	if l.done != nil {
		close(l.done)
	}
	hook := l.onEnd
	l.onEnd = nil
	l.mu.Unlock()
	if hook != nil {
		hook(err)
	}
	if obs := l.c.cfg.obs.End; obs != nil {
		obs(EndEvent{Key: l.key, Lost: lost, Held: l.c.cfg.clock.Now().Sub(l.start), Err: err})
	}
}
