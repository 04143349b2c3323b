package redlock

import (
	"context"
	"errors"
	"time"
)

// Do acquires key for ttl, waiting like Lock; runs fn with the held lock
// while auto-extension (see KeepAlive) keeps it alive; and releases it when
// fn returns. fn's context is derived from ctx and is cancelled, with the
// loss error as its cause (context.Cause), the moment the lock is lost:
// when a renewal finds it gone or when Until − margin (LossMargin) arrives
// without a successful renewal. fn must stop touching the protected resource
// when its context is done; a process that is itself paused learns of the
// loss late, which only fencing of the resource can cover.
//
// Do returns:
//   - the acquisition error if the lock was not obtained (ErrNotObtained,
//     with ErrQuorumUnreachable or ctx.Err() as for Lock); fn does not run;
//   - fn's error;
//   - joined with fn's error (or alone if fn returned nil), an error matching
//     ErrLockLost if the lock was lost while fn ran, or if the release found
//     that it had been lost unnoticed. So Do returns nil only if fn returned
//     nil and, as far as the Client can tell, the lock was held throughout.
//
// A release that cannot reach a quorum is not reported: the key then expires
// on the remaining nodes within ttl. fn may call l.Unlock to release early;
// Do then does not release again. If fn panics, the lock is released
// (renewal stopped first) and the panic continues. Renewal has stopped for
// good before Do returns. The ttl must leave room for the loss margin (see
// WithLossMargin); fn must not be nil.
func (c *Client) Do(ctx context.Context, key string, ttl time.Duration, fn func(ctx context.Context, l *Lock) error) (err error) {
	if err := c.checkLockArgs("Do", ctx, key, ttl); err != nil {
		return err
	}
	if fn == nil {
		return errors.New("redlock: Do: nil fn")
	}
	if err := c.checkKeepAlive("Do", ttl); err != nil {
		return err
	}
	l, err := c.Lock(ctx, key, ttl)
	if err != nil {
		return err
	}
	fctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if err := l.keepAlive("Do", cancel); err != nil {
		// Acquired too late to be kept alive (or the Client is closing).
		l.Unlock(ctx)
		return err
	}
	// Deferred, so that a panic in fn still releases the lock; the panic then
	// continues with its original stack.
	defer func() {
		l.mu.Lock()
		released := l.unlocked // fn may release early
		l.mu.Unlock()
		var uerr error
		if !released {
			uerr = l.Unlock(ctx)
		}
		l.mu.Lock()
		lost := l.lost
		l.mu.Unlock()
		if lost == nil && errors.Is(uerr, ErrLockLost) {
			lost = uerr
		}
		if lost != nil && !errors.Is(err, lost) {
			err = errors.Join(err, lost)
		}
	}()
	return fn(fctx, l)
}
