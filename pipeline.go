package redlock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// The auto-pipelined transport: per node, one long-lived connection shared
// by every goroutine of the Client. Commands are queued with a completer;
// a writer goroutine flushes whatever has queued up in one write, and a
// reader goroutine matches the replies, which Redis sends in order, to the
// queued commands and hands each to its completer. Under load many lock
// operations travel in one write and one read, instead of a connection
// (and, with redigo's DoContext, a goroutine) each. The fan-out queues its
// commands directly (pipe.sendScript, fanout.go) and is called back; other
// callers block on a call (pipe.call). A command sent to an idle connection
// (nothing awaiting a reply) is written by the reader, which has nothing
// else to do, rather than by the writer: a lone command costs one goroutine
// switch fewer.
//
// Deadlines: each call carries its own (the per-node timeout). The reader's
// read deadline is the earliest deadline among the calls waiting for a reply;
// when it passes, every call waiting on the connection fails with an
// outcome-unknown timeout (the lock layer treats that like any timed-out
// acquire and releases on that node) and the connection is replaced on the
// next call. A slow node stalls only its own connection.
//
// Idle connections: a node, a proxy or a firewall may close a connection
// nobody used for a while (Redis's `timeout`). A command written to it would
// fail with an unknown outcome, on every node at once after a quiet spell.
// So the first command after an idle spell first peeks at the socket
// (peerClosed, where the socket is known): a connection the node closed is
// given up before anything is written, and the command goes out on a new
// one, its outcome known (not sent).

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
	var c redis.Conn
	var nc net.Conn
	var err error
	if t.pool.dial != nil {
		c, nc, err = t.pool.dial(ctx) // our own dialer: the socket can be checked (peerClosed)
	} else {
		c, err = t.pool.pool.GetContext(ctx)
	}
	cancel()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dialing, t.dialErr = nil, err
	if err == nil {
		if t.closed {
			c.Close()
		} else {
			t.cur = newPipe(c, nc, t.pool.doubt, &t.wg)
		}
	}
	close(done)
}

func (t *pipeTransport) do(ctx context.Context, cmd string, args ...interface{}) (interface{}, error) {
	return t.doChecked(ctx, nil, nil, cmd, args...)
}

// doChecked is do, with check (if not nil) run after the connection is
// taken and before the command is queued on it. If sc is not nil, the
// command is sc's EVALSHA (pipe.sendScript).
func (t *pipeTransport) doChecked(ctx context.Context, check func() error, sc *script, cmd string, args ...interface{}) (interface{}, error) {
	for {
		p, err := t.pipe(ctx)
		if err != nil {
			return nil, err
		}
		if check != nil {
			if err := check(); err != nil {
				return nil, err
			}
		}
		v, err := p.call(ctx, sc, cmd, args...)
		if ns := notSent(err); ns != nil && ctx.Err() == nil {
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

func notSent(err error) *notSentError {
	if err == nil {
		return nil
	}
	var ns *notSentError
	errors.As(err, &ns)
	return ns
}

// replyIs reports whether err is a Redis error reply of the given kind (its
// first word: NOSCRIPT, NOPERM).
func replyIs(err error, kind string) bool {
	e, ok := err.(redis.Error)
	return ok && strings.HasPrefix(string(e), kind+" ")
}

// eval runs the script over the pipeline (see pipe.sendScript for EVAL and
// EVALSHA).
func (t *pipeTransport) eval(ctx context.Context, s *script, keysAndArgs ...interface{}) (interface{}, error) {
	return t.doChecked(ctx, t.pool.check, s, "EVALSHA", s.args(keysAndArgs...)...)
}

// live returns the node's pipelined connection if one is up, without
// dialling: the fan-out queues commands on it without waiting (fanout.go).
func (t *pipeTransport) live() *pipe {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	return t.cur
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

// completer receives the outcome of one queued command: its reply (an error
// reply as a redis.Error in err), or the failure of the connection (the
// outcome is then unknown). It is called exactly once, by the connection's
// reader (or whoever fails the connection), with no pipe lock held; it must
// not block.
type completer interface {
	complete(reply interface{}, err error)
}

// call is one command waiting for its reply. For a script's command, sc
// and its EVALSHA arguments, to send it again (see reader), and whether it
// went as EVAL.
type call struct {
	deadline time.Time
	to       completer
	sc       *script
	args     []interface{}
	eval     bool
}

// calls is the FIFO of commands awaiting replies: a ring that grows as
// needed and is reused, so that queuing a command allocates nothing once
// the connection has warmed up.
type calls struct {
	ring    []call
	head, n int
}

func (q *calls) push(c call) {
	if q.n == len(q.ring) {
		ring := make([]call, max(8, 2*len(q.ring)))
		for i := 0; i < q.n; i++ {
			ring[i] = q.ring[(q.head+i)%len(q.ring)]
		}
		q.ring, q.head = ring, 0
	}
	q.ring[(q.head+q.n)%len(q.ring)] = c
	q.n++
}

func (q *calls) pop() call {
	c := q.ring[q.head]
	q.ring[q.head] = call{}
	q.head = (q.head + 1) % len(q.ring)
	q.n--
	return c
}

// earliest returns the earliest deadline among the queued calls (n > 0).
func (q *calls) earliest() time.Time {
	e := q.ring[q.head].deadline
	for i := 1; i < q.n; i++ {
		if d := q.ring[(q.head+i)%len(q.ring)].deadline; d.Before(e) {
			e = d
		}
	}
	return e
}

// drain empties the queue and returns its calls in order.
func (q *calls) drain() []call {
	out := make([]call, q.n)
	for i := range out {
		out[i] = q.pop()
	}
	return out
}

// pipe is one pipelined connection.
type pipe struct {
	c     redis.Conn
	nc    net.Conn    // the socket under c, if known (our own dialer): checked after an idle spell
	doubt func(error) // told of signs of a restart (poolTransport.doubt); may be nil

	mu      sync.Mutex    // guards the fields below and Send on c
	waiting calls         // sent (or buffered), in order, awaiting replies
	dead    error         // set once the connection failed; never cleared
	deadCh  chan struct{} // closed when dead is set
	broken  error         // a write failed and the socket was broken; the reader fails the pipe
	// unflushed: commands were buffered since the last flush; idle: the
	// reader waits for commands (on recv), and flushes them itself.
	unflushed, idle bool
	idleSince       time.Time // when the reader last became idle
	// loaded: the scripts this connection has sent as EVAL, and so may send
	// as EVALSHA (see sendScript).
	loaded map[*script]bool
	flush  chan struct{} // wakes the writer
	recv   chan struct{} // wakes an idle reader
}

func newPipe(c redis.Conn, nc net.Conn, doubt func(error), wg *sync.WaitGroup) *pipe {
	p := &pipe{c: c, nc: nc, doubt: doubt, deadCh: make(chan struct{}), flush: make(chan struct{}, 1), recv: make(chan struct{}, 1)}
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

// idleCheckAfter is how long a connection must have been idle before its
// next command checks that the node has not closed it meanwhile
// (peerClosed): a server's idle timeout (Redis's `timeout`), a proxy's or a
// firewall's. Shorter spells are not checked: the check is a system call,
// and a busy connection would pay it on every fan-out.
const idleCheckAfter = 100 * time.Millisecond

// errClosedWhileIdle is the cause when the node closed a connection while no
// command was outstanding on it; the command that found it is sent again on
// a new connection.
var errClosedWhileIdle = errors.New("redlock: connection closed by the node while idle")

// sendScript queues sc's EVALSHA with args (script.args); see queue. A script's
// first command on a connection goes as EVAL, which loads it, so that its
// EVALSHA does not meet NOSCRIPT on a fresh node: the usual fallback, EVAL
// after NOSCRIPT, would run the command after whatever other fan-outs
// queued behind it meanwhile, and some of those must run after it (a
// waiting Lock call's leave after its registration, on a node where the
// acquire came back NOSCRIPT, would leave it registered). NOSCRIPT can
// still come (SCRIPT FLUSH; Redis 7.4 evicts scripts that EVAL loaded):
// the reader sends the command again only if nothing is queued behind it.
func (p *pipe) sendScript(deadline time.Time, to completer, sc *script, args []interface{}) error {
	return p.queue(deadline, to, sc, "EVALSHA", args)
}

// evalArgs returns sc's EVAL arguments for its EVALSHA arguments.
func evalArgs(sc *script, args []interface{}) []interface{} {
	a := slices.Clone(args)
	a[0] = sc.src
	return a
}

// queue queues a command whose reply is due by deadline, for the writer to
// flush; to receives the outcome. If sc is not nil, the command is sc's
// EVALSHA (see sendScript). It fails with a *notSentError, and to is never
// called, if the connection is already dead, or if after an idle spell the
// node turns out to have closed it.
func (p *pipe) queue(deadline time.Time, to completer, sc *script, cmd string, args []interface{}) error {
	p.mu.Lock()
	if p.dead != nil {
		err := p.dead
		p.mu.Unlock()
		return &notSentError{err: err, pipe: p}
	}
	if p.idle && p.nc != nil && p.waiting.n == 0 && time.Since(p.idleSince) >= idleCheckAfter {
		// Nothing is in flight and the reader is not reading: peeking at
		// the socket races with nobody.
		if err := peerClosed(p.nc); err != nil {
			abort(p.c)
			p.broken = err
			p.mu.Unlock()
			if p.doubt != nil {
				p.doubt(err) // before the caller's next look at the node
			}
			signal(p.recv) // the reader fails the pipe; the caller goes to a new one
			return &notSentError{err: err, pipe: p}
		}
	}
	sent, eval := args, false
	if sc != nil && !p.loaded[sc] {
		if p.loaded == nil {
			p.loaded = make(map[*script]bool)
		}
		p.loaded[sc] = true // for the commands queued behind; see reader
		cmd, sent, eval = "EVAL", evalArgs(sc, args), true
	}
	if err := p.c.Send(cmd, sent...); err != nil {
		// redigo buffers Send; an error means the connection already
		// failed to write, before this command. The reader decides why the
		// pipe died (it saw the cause first): break the socket so that it does.
		abort(p.c)
		p.broken = err
		p.mu.Unlock()
		signal(p.recv)
		return &notSentError{err: err, pipe: p}
	}
	cl := call{deadline: deadline, to: to}
	if sc != nil {
		cl.sc, cl.args, cl.eval = sc, args, eval
	}
	p.waiting.push(cl)
	p.unflushed = true
	idle := p.idle
	p.mu.Unlock()
	if idle {
		// The reader has nothing to read: it writes this command before it
		// starts reading, which spares a lone command a switch to the writer.
		signal(p.recv)
	} else {
		signal(p.flush)
	}
	return nil
}

// blockingCall is the completer of a blocking call.
type blockingCall struct {
	reply interface{}
	err   error
	ready chan struct{}
}

func (w *blockingCall) complete(reply interface{}, err error) {
	w.reply, w.err = reply, err
	close(w.ready)
}

// call queues a command and waits for its reply or ctx's end.
//
// The connection is judged by the node's responsiveness: a reply is due
// within the per-node timeout of the send (carried in ctx by the fan-out).
// A caller may give up earlier, on its own deadline or cancellation; its
// command stays queued, and that must not fail the connection and every
// command queued behind (a cleanup release among them could then be lost
// while the acquire before it was applied).
func (p *pipe) call(ctx context.Context, sc *script, cmd string, args ...interface{}) (interface{}, error) {
	due, ok := ctx.Value(nodeTimeoutKey{}).(time.Duration)
	if !ok {
		due = MaxNodeTimeout
		if dl, ok := ctx.Deadline(); ok {
			due = time.Until(dl)
		}
	}
	w := &blockingCall{ready: make(chan struct{})}
	if err := p.queue(time.Now().Add(due), w, sc, cmd, args); err != nil {
		return nil, err
	}
	select {
	case <-w.ready:
		return w.reply, w.err
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
		ok := p.flushLocked()
		p.mu.Unlock()
		if !ok {
			return
		}
	}
}

// flushLocked writes the buffered commands, if any; the caller holds p.mu.
// On a write error it breaks the socket and leaves it to the reader, which
// sees the cause, to fail the pipe (as queue does), and reports false.
func (p *pipe) flushLocked() bool {
	if p.broken != nil {
		return false
	}
	if !p.unflushed {
		return true
	}
	p.unflushed = false
	if err := p.c.Flush(); err != nil {
		abort(p.c)
		p.broken = err
		signal(p.recv)
		return false
	}
	return true
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
		if p.waiting.n == 0 && p.dead == nil && p.broken == nil {
			p.idleSince = time.Now()
			for p.waiting.n == 0 && p.dead == nil && p.broken == nil {
				p.idle = true
				p.mu.Unlock()
				<-p.recv
				p.mu.Lock()
				p.idle = false
			}
			if p.dead == nil && p.unflushed {
				p.flushLocked() // see queue; a failure leaves p.broken set
			}
		}
		if p.dead != nil {
			p.mu.Unlock()
			return
		}
		if p.waiting.n == 0 { // broken with nothing to read: the write error is the cause
			err := p.broken
			p.mu.Unlock()
			p.fail(err)
			return
		}
		earliest := p.waiting.earliest()
		p.mu.Unlock()

		timeout := time.Until(earliest)
		if timeout <= 0 {
			p.fail(fmt.Errorf("%w (pipelined connection)", ErrNodeTimeout))
			return
		}
		reply, err := redis.ReceiveWithTimeout(p.c, timeout)
		if err != nil && !isReplyError(err) { // a Redis error reply is a reply
			switch {
			case isTimeout(err):
				err = fmt.Errorf("%w (pipelined connection)", ErrNodeTimeout)
			case errors.Is(err, net.ErrClosed):
				// We broke the socket under this read, after a write
				// failed (queue, flushLocked): that failure is the cause.
				p.mu.Lock()
				if p.broken != nil {
					err = p.broken
				}
				p.mu.Unlock()
			}
			p.fail(err)
			return
		}
		p.mu.Lock()
		if p.dead != nil { // failed meanwhile: every waiting call was failed with it
			p.mu.Unlock()
			return
		}
		cl := p.waiting.pop()
		lost, resent := false, false
		switch {
		case cl.sc == nil || !isReplyError(err):
		case cl.eval && !replyIs(err, "NOPERM"):
			// The EVAL failed: it may have been refused before the script
			// was loaded (BUSY, LOADING on a restarted node), so the next
			// command goes as EVAL too. (Not after NOPERM: EVAL is not
			// allowed, and EVALSHA may be, for a script loaded otherwise.)
			p.loaded[cl.sc] = false
		case replyIs(err, "NOSCRIPT"):
			// The node lost the script since this connection loaded it
			// (SCRIPT FLUSH, eviction, a restart behind a proxy). Sent again
			// now, at the end of the queue, the command would run after
			// commands queued behind it that have already run: only with
			// nothing queued behind it does it go again, as EVAL. Otherwise
			// it fails, known not to have run.
			lost = true
			p.loaded[cl.sc] = false
			why := "commands were queued behind it, which keep their order"
			if p.waiting.n == 0 && p.broken == nil {
				serr := p.c.Send("EVAL", evalArgs(cl.sc, cl.args)...)
				if resent = serr == nil; resent {
					p.loaded[cl.sc], cl.eval = true, true
					p.waiting.push(cl)
					p.unflushed = true
					p.flushLocked() // a failure leaves p.broken set: the reader fails the pipe, cl with it
				} else {
					abort(p.c) // as in queue
					p.broken = serr
					why = "the connection failed"
				}
			}
			if !resent {
				err = fmt.Errorf("%w (the node lost the script; not sent again: %s)", err, why)
			}
		}
		p.mu.Unlock()
		if lost && p.doubt != nil {
			p.doubt(errScriptLost)
		}
		if !resent {
			cl.to.complete(reply, err)
		}
	}
}

// errScriptLost is what the Client is told (doubt) when a node answers
// NOSCRIPT for a script the connection had loaded.
var errScriptLost = errors.New("redlock: the node lost a script this connection had loaded (SCRIPT FLUSH, script eviction, or a restart behind a proxy)")

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
	waiting := p.waiting.drain()
	abort(p.c) // under p.mu: redigo's Send and Flush must not run meanwhile
	p.mu.Unlock()
	for _, cl := range waiting {
		cl.to.complete(nil, err)
	}
	if p.doubt != nil && !errors.Is(err, ErrClosed) {
		// Also when nobody waits for a failed command's outcome any more
		// (its caller gave up): the next command re-checks the node.
		p.doubt(err)
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
