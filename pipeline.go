package redlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// The auto-pipelined transport: per node, one long-lived connection shared
// by every goroutine of the Client. Callers queue their command and wait; a
// writer goroutine flushes whatever has queued up in one write, and a reader
// goroutine matches the replies, which Redis sends in order, to the queued
// calls. Under load many lock operations travel in one write and one read,
// instead of a connection (and, with redigo's DoContext, a goroutine) each.
//
// Deadlines: each call carries its own (the per-node timeout). The reader's
// read deadline is the earliest deadline among the calls waiting for a reply;
// when it passes, every call waiting on the connection fails with an
// outcome-unknown timeout (the lock layer treats that like any timed-out
// acquire and releases on that node) and the connection is replaced on the
// next call. A slow node stalls only its own connection.

// pipeTransport is the transport of one node over a pipelined connection.
type pipeTransport struct {
	pool *poolTransport // source of the connection; serves blocking operations and owns the pool

	mu      sync.Mutex
	cur     *pipe
	dialing chan struct{} // closed when the dial in progress ends
	dialErr error
	closed  bool
	wg      sync.WaitGroup // the dialer and the pipes' goroutines
}

var _ transport = (*pipeTransport)(nil)

func newPipeTransport(p *poolTransport) *pipeTransport { return &pipeTransport{pool: p} }

// pipeDialTimeout bounds getting a new connection for the pipeline; callers
// give up earlier on their own deadlines.
const pipeDialTimeout = MaxNodeTimeout

// pipe returns a live pipelined connection, dialling one if needed.
func (t *pipeTransport) pipe(ctx context.Context) (*pipe, error) {
	for attempt := 0; ; attempt++ {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return nil, ErrClosed
		}
		if p := t.cur; p != nil && p.alive() {
			t.mu.Unlock()
			return p, nil
		}
		if attempt > 0 && t.dialErr != nil {
			err := t.dialErr
			t.mu.Unlock()
			return nil, err
		}
		if t.dialing == nil {
			t.dialing = make(chan struct{})
			t.wg.Add(1)
			go t.dial(t.dialing)
		}
		ch := t.dialing
		t.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// dial gets a connection from the pool for the pipeline. It runs on its own
// so that no caller's deadline is spent on another caller's dial.
func (t *pipeTransport) dial(done chan struct{}) {
	defer t.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), pipeDialTimeout)
	c, err := t.pool.pool.GetContext(ctx)
	cancel()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dialing, t.dialErr = nil, err
	if err == nil {
		if t.closed {
			c.Close()
		} else {
			t.cur = newPipe(c, &t.wg)
		}
	}
	close(done)
}

func (t *pipeTransport) do(ctx context.Context, cmd string, args ...interface{}) (interface{}, error) {
	for {
		p, err := t.pipe(ctx)
		if err != nil {
			return nil, err
		}
		v, err := p.call(ctx, cmd, args...)
		var ns *notSentError
		if errors.As(err, &ns) && ctx.Err() == nil {
			// The connection died before our command went out: once the
			// reader has declared it dead, a fresh one may take it.
			select {
			case <-ns.pipe.deadCh:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return v, err
	}
}

// notSentError fails a call whose command never reached the connection
// (it was already dead): unlike other failures, its outcome is known.
type notSentError struct {
	err  error
	pipe *pipe // the dead (or dying) pipe
}

func (e *notSentError) Error() string { return e.err.Error() }
func (e *notSentError) Unwrap() error { return e.err }

// eval sends EVALSHA and, if the node does not know the script (flushed or
// restarted), EVAL: redis.Script's own fallback, over the pipeline.
func (t *pipeTransport) eval(ctx context.Context, s *script, keysAndArgs ...interface{}) (interface{}, error) {
	args := s.args(keysAndArgs)
	v, err := t.do(ctx, "EVALSHA", args...)
	if e, ok := err.(redis.Error); ok && strings.HasPrefix(string(e), "NOSCRIPT ") {
		args[0] = s.src
		v, err = t.do(ctx, "EVAL", args...)
	}
	return v, err
}

func (t *pipeTransport) conn(ctx context.Context) (redis.Conn, error) { return t.pool.conn(ctx) }

func (t *pipeTransport) close() error {
	t.mu.Lock()
	t.closed = true
	p := t.cur
	t.cur = nil
	t.mu.Unlock()
	if p != nil {
		p.fail(ErrClosed)
	}
	t.wg.Wait()
	return t.pool.close()
}

// call is one command waiting for its reply.
type call struct {
	deadline time.Time
	reply    interface{}
	err      error
	ready    chan struct{}
}

// pipe is one pipelined connection.
type pipe struct {
	c redis.Conn

	mu      sync.Mutex    // guards the fields below and Send on c
	waiting []*call       // sent (or buffered), in order, awaiting replies
	dead    error         // set once the connection failed; never cleared
	deadCh  chan struct{} // closed when dead is set
	broken  error         // a write failed and the socket was broken; the reader fails the pipe
	flush   chan struct{}
	recv    chan struct{}
}

func newPipe(c redis.Conn, wg *sync.WaitGroup) *pipe {
	p := &pipe{c: c, deadCh: make(chan struct{}), flush: make(chan struct{}, 1), recv: make(chan struct{}, 1)}
	wg.Add(2)
	go func() { defer wg.Done(); p.writer() }()
	go func() { defer wg.Done(); p.reader() }()
	return p
}

func (p *pipe) alive() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dead == nil
}

// call queues a command and waits for its reply or ctx's end.
//
// The connection is judged by the node's responsiveness: a reply is due
// within the per-node timeout of the send (carried in ctx by the fan-out).
// A caller may give up earlier, on its own deadline or cancellation; its
// command stays queued, and that must not fail the connection and every
// command queued behind (a cleanup release among them could then be lost
// while the acquire before it was applied).
func (p *pipe) call(ctx context.Context, cmd string, args ...interface{}) (interface{}, error) {
	due, ok := ctx.Value(nodeTimeoutKey{}).(time.Duration)
	if !ok {
		due = MaxNodeTimeout
		if dl, ok := ctx.Deadline(); ok {
			due = time.Until(dl)
		}
	}
	cl := &call{deadline: time.Now().Add(due), ready: make(chan struct{})}
	p.mu.Lock()
	if p.dead != nil {
		err := p.dead
		p.mu.Unlock()
		return nil, &notSentError{err: err, pipe: p}
	}
	if err := p.c.Send(cmd, args...); err != nil {
		// redigo buffers Send; an error means the connection already
		// failed to write, before this command. The reader decides why the
		// pipe died (it saw the cause first): break the socket so that it does.
		abort(p.c)
		p.broken = err
		p.mu.Unlock()
		signal(p.recv)
		return nil, &notSentError{err: err, pipe: p}
	}
	p.waiting = append(p.waiting, cl)
	p.mu.Unlock()
	signal(p.flush)
	signal(p.recv)
	select {
	case <-cl.ready:
		return cl.reply, cl.err
	case <-ctx.Done():
		// The call stays queued so that replies stay aligned; its reply
		// will be dropped. The outcome is unknown, as for any timeout.
		return nil, ctx.Err()
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// writer flushes the buffered commands: every command queued while the
// previous write was in progress goes out in the next one.
func (p *pipe) writer() {
	for {
		<-p.flush
		p.mu.Lock()
		if p.dead != nil {
			p.mu.Unlock()
			return
		}
		err := p.c.Flush()
		if err != nil {
			// As in call: let the reader, which sees the cause, fail the pipe.
			abort(p.c)
			p.broken = err
			p.mu.Unlock()
			signal(p.recv)
			return
		}
		p.mu.Unlock()
	}
}

// reader receives replies in order and hands each to its call. It is the
// connection's last user: when the pipe dies it closes the connection.
func (p *pipe) reader() {
	defer func() {
		p.mu.Lock() // Send and Flush run under p.mu: none is in progress
		p.c.Close()
		p.mu.Unlock()
	}()
	for {
		p.mu.Lock()
		for len(p.waiting) == 0 && p.dead == nil && p.broken == nil {
			p.mu.Unlock()
			<-p.recv
			p.mu.Lock()
		}
		if p.dead != nil {
			p.mu.Unlock()
			return
		}
		if len(p.waiting) == 0 { // broken with nothing to read: the write error is the cause
			err := p.broken
			p.mu.Unlock()
			p.fail(err)
			return
		}
		earliest := p.waiting[0].deadline
		for _, cl := range p.waiting[1:] {
			if cl.deadline.Before(earliest) {
				earliest = cl.deadline
			}
		}
		p.mu.Unlock()

		timeout := time.Until(earliest)
		if timeout <= 0 {
			p.fail(fmt.Errorf("%w (pipelined connection)", ErrNodeTimeout))
			return
		}
		reply, err := redis.ReceiveWithTimeout(p.c, timeout)
		var re redis.Error
		if err != nil && !errors.As(err, &re) { // a Redis error reply is a reply
			if isTimeout(err) {
				err = fmt.Errorf("%w (pipelined connection)", ErrNodeTimeout)
			}
			p.fail(err)
			return
		}
		p.mu.Lock()
		if p.dead != nil { // failed meanwhile: every waiting call was failed with it
			p.mu.Unlock()
			return
		}
		cl := p.waiting[0]
		p.waiting = p.waiting[1:]
		p.mu.Unlock()
		cl.reply, cl.err = reply, err
		close(cl.ready)
	}
}

// fail marks the connection dead, fails every waiting call with err (their
// outcome is unknown) and breaks the socket, which ends the reader and the
// writer; the reader closes the connection. The next call dials anew.
func (p *pipe) fail(err error) {
	p.mu.Lock()
	if p.dead != nil {
		p.mu.Unlock()
		return
	}
	p.dead = err
	close(p.deadCh)
	waiting := p.waiting
	p.waiting = nil
	abort(p.c) // under p.mu: redigo's Send and Flush must not run meanwhile
	p.mu.Unlock()
	for _, cl := range waiting {
		cl.err = err
		close(cl.ready)
	}
	signal(p.flush) // wakes the writer so it sees dead
	signal(p.recv)  // and the reader
}

// expired is a context whose deadline has passed.
var expired, _ = context.WithDeadline(context.Background(), time.Unix(0, 0))

// abort breaks c's socket without reading: redigo's Close on a pooled
// connection first reads the replies still outstanding, with no deadline,
// which on a paused node never returns (and clears the read deadline the
// reader relies on). A call with an expired deadline makes redigo close the
// socket at once; the later Close then has nothing to wait for and discards
// the connection.
func abort(c redis.Conn) {
	_, _ = redis.DoContext(c, expired, "")
}
