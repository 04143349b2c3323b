package redlock

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Wake-on-release: Unlock publishes the released token, and the next waiter
// in the node's queue, on a per-key channel on every node it releases, and
// waiting Lock calls subscribe to it. Each
// Client keeps at most one subscriber connection per node, shared by all the
// keys it waits on; a node's connection exists only while some waiter needs
// it. Lost messages are harmless: a waiter also wakes when the holder's TTL
// runs out (see wait.go), so a lost message costs at most that, never a hang.

// SubscriberIdleTimeout is how long a node's subscriber connection is kept
// open with no subscription, so that consecutive waits do not redial.
const SubscriberIdleTimeout = 10 * time.Second

// releaseChannel is the pub/sub channel on which releases of the Redis key
// name are announced (payload: the released token).
func releaseChannel(name string) string { return "redlock:released:" + name }

// hub multiplexes the Client's subscriptions over one connection per node.
type hub struct {
	c      *Client
	mu     sync.Mutex
	closed bool // stop was called: no new connections
	subs   []*nodeSub
	watch  map[string]map[*watch]struct{} // channel → active watches
	wg     sync.WaitGroup                 // reader goroutines
}

// watch is one waiter's interest in one channel.
type watch struct {
	h       *hub
	channel string
	signal  chan struct{}  // buffered 1: new tokens are pending
	pending []notice       // announcements not yet taken, oldest first; guarded by h.mu
	recent  []announcement // the last announced releases, newest last; guarded by h.mu
	// ok holds the nodes that confirmed the subscription on their current
	// connection; guarded by h.mu. confirmed signals a change (buffered 1).
	ok        map[int]bool
	confirmed chan struct{}
}

// nodeSub is the subscriber connection to one node.
type nodeSub struct {
	h      *hub
	i      int
	refs   map[string]int // channel → number of watches
	conn   *redis.PubSubConn
	writeM sync.Mutex // one concurrent writer on conn (redigo's rule)
	cancel context.CancelFunc
	ok     map[string]bool // channels confirmed on the current connection
	idle   *time.Timer     // closes an unused connection after SubscriberIdleTimeout
}

func newHub(c *Client) *hub {
	h := &hub{c: c, watch: map[string]map[*watch]struct{}{}}
	h.subs = make([]*nodeSub, len(c.nodes))
	for i := range c.nodes {
		h.subs[i] = &nodeSub{h: h, i: i, refs: map[string]int{}, ok: map[string]bool{}}
	}
	return h
}

// subscribe registers a watch on channel with every node. The caller must
// close it. Confirmations arrive on w.confirmed as nodes acknowledge.
func (h *hub) subscribe(channel string) *watch {
	w := &watch{h: h, channel: channel, signal: make(chan struct{}, 1),
		ok: map[int]bool{}, confirmed: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.watch[channel]
	if set == nil {
		set = map[*watch]struct{}{}
		h.watch[channel] = set
	}
	set[w] = struct{}{}
	for _, s := range h.subs {
		s.refs[channel]++
		if s.idle != nil {
			s.idle.Stop()
			s.idle = nil
		}
		switch {
		case s.ok[channel]:
			w.ok[s.i] = true
		case s.conn != nil && s.refs[channel] == 1:
			s.send("SUBSCRIBE", channel)
		case s.cancel == nil && !h.closed:
			s.connect()
		}
	}
	return w
}

// close ends the watch; the last watch of a channel unsubscribes it, and a
// node left with no channel drops its connection.
func (w *watch) close() {
	h := w.h
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.watch[w.channel], w)
	if len(h.watch[w.channel]) == 0 {
		delete(h.watch, w.channel)
	}
	for _, s := range h.subs {
		s.refs[w.channel]--
		if s.refs[w.channel] > 0 {
			continue
		}
		delete(s.refs, w.channel)
		delete(s.ok, w.channel)
		if s.conn != nil {
			s.send("UNSUBSCRIBE", w.channel)
		}
		if len(s.refs) == 0 && s.cancel != nil && s.idle == nil {
			s.idle = time.AfterFunc(SubscriberIdleTimeout, s.closeIdle)
		}
	}
}

// closeIdle drops the node's connection if no channel is in use.
func (s *nodeSub) closeIdle() {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	s.idle = nil
	if len(s.refs) == 0 && s.cancel != nil {
		s.cancel() // the reader closes the connection
		s.cancel, s.conn = nil, nil
	}
}

// notice is one node's announcement: a released token (or the id of a
// waiter that left the queue of a free key), the waiter the node names as
// next ("" if none waits there), and the first waiter after it of another
// Client ("" if none).
type notice struct{ token, next, other string }

// maxPending bounds the announcements a watch keeps for its waiter; a waiter
// takes them each time it waits, so only a long attempt lets them pile up,
// and the oldest are the least useful.
const maxPending = 256

// recentTokens bounds the memory of announced tokens per watch. The N
// announcements of one release arrive within a round trip of each other;
// remembering the last few dozen releases is plenty to deduplicate them.
const recentTokens = 64

// announcement is a release and how many nodes announced it.
type announcement struct {
	token string
	nodes int
}

// announced returns the recent announcement of token's release, or nil.
// Called with h.mu held.
func (w *watch) announced(token string) *announcement {
	for i := range w.recent {
		if w.recent[i].token == token {
			return &w.recent[i]
		}
	}
	return nil
}

// released returns how many nodes recently announced the release of token.
func (w *watch) released(token string) int {
	w.h.mu.Lock()
	defer w.h.mu.Unlock()
	if a := w.announced(token); a != nil {
		return a.nodes
	}
	return 0
}

// take returns the announcements made since the last call.
func (w *watch) take() []notice {
	w.h.mu.Lock()
	defer w.h.mu.Unlock()
	p := w.pending
	w.pending = nil
	return p
}

// awaitConfirmed waits until n nodes have confirmed the subscription, or
// timeout passes, or ctx ends; it reports whether n confirmed.
func (w *watch) awaitConfirmed(ctx context.Context, n int, timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		w.h.mu.Lock()
		got := len(w.ok)
		w.h.mu.Unlock()
		if got >= n {
			return true
		}
		select {
		case <-w.confirmed:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// send writes a subscription command on the node's connection. Called with
// h.mu held; a failed write is noticed by the reader, which reconnects.
func (s *nodeSub) send(cmd, channel string) {
	s.writeM.Lock()
	defer s.writeM.Unlock()
	if cmd == "SUBSCRIBE" {
		_ = s.conn.Subscribe(channel)
	} else {
		_ = s.conn.Unsubscribe(channel)
	}
}

// connect starts the node's connection loop. Called with h.mu held.
func (s *nodeSub) connect() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.h.wg.Add(1)
	go s.run(ctx)
}

// run owns the node's subscriber connection: it dials, subscribes to every
// channel in use, dispatches what arrives, and reconnects (with back-off)
// after an error, such as a node restart, until cancelled.
func (s *nodeSub) run(ctx context.Context) {
	defer s.h.wg.Done()
	n := s.h.c.nodes[s.i]
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(ctx, s.h.c.cfg.nodeTimeoutFor(10*MaxNodeTimeout))
		conn, err := n.t.conn(dctx)
		cancel()
		if err == nil {
			psc := &redis.PubSubConn{Conn: conn}
			s.h.mu.Lock()
			if ctx.Err() != nil { // closed meanwhile
				s.h.mu.Unlock()
				conn.Close()
				return
			}
			s.conn = psc
			channels := make([]interface{}, 0, len(s.refs))
			for ch := range s.refs {
				channels = append(channels, ch)
			}
			if len(channels) > 0 {
				s.writeM.Lock()
				_ = psc.Subscribe(channels...)
				s.writeM.Unlock()
			}
			s.h.mu.Unlock()
			if s.read(ctx, psc) {
				backoff = 50 * time.Millisecond // the connection worked for a while
			}
			// Detach the connection under h.mu first (writers send with h.mu
			// held, so none can reach it afterwards), then close it.
			s.h.mu.Lock()
			if s.conn == psc {
				s.conn = nil
				clear(s.ok)
				for _, set := range s.h.watch {
					for w := range set {
						delete(w.ok, s.i)
					}
				}
			}
			s.h.mu.Unlock()
			s.writeM.Lock()
			conn.Close()
			s.writeM.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff + jitter(backoff)):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// read dispatches messages until the connection fails or ctx ends; it
// reports whether any message arrived.
func (s *nodeSub) read(ctx context.Context, psc *redis.PubSubConn) bool {
	got := false
	for {
		switch m := psc.ReceiveContext(ctx).(type) {
		case redis.Message:
			got = true
			token, rest, _ := strings.Cut(string(m.Data), " ")
			next, other, _ := strings.Cut(rest, " ")
			s.h.dispatch(m.Channel, notice{token: token, next: next, other: other})
		case redis.Subscription:
			got = true
			if m.Kind == "subscribe" {
				s.h.confirm(s, m.Channel)
			}
		case error:
			return got
		}
	}
}

// confirm records that node s is subscribed to channel and tells the watches.
func (h *hub) confirm(s *nodeSub, channel string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.refs[channel] == 0 {
		return // unsubscribed meanwhile
	}
	s.ok[channel] = true
	for w := range h.watch[channel] {
		w.ok[s.i] = true
		select {
		case w.confirmed <- struct{}{}:
		default:
		}
	}
}

// dispatch hands an announcement to the watches of channel. The N nodes
// each announce the same release, and count it (see released); each node's
// announcement is passed on, since the nodes may name different waiters.
func (h *hub) dispatch(channel string, n notice) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.watch[channel] {
		if a := w.announced(n.token); a != nil {
			a.nodes++
		} else {
			if len(w.recent) == recentTokens {
				w.recent = append(w.recent[:0], w.recent[1:]...)
			}
			w.recent = append(w.recent, announcement{token: n.token, nodes: 1})
		}
		if len(w.pending) == maxPending {
			w.pending = append(w.pending[:0], w.pending[1:]...)
		}
		w.pending = append(w.pending, n)
		select {
		case w.signal <- struct{}{}:
		default: // a signal is already pending
		}
	}
}

// stop closes every subscriber connection and waits for the readers.
func (h *hub) stop() {
	h.mu.Lock()
	h.closed = true
	for _, s := range h.subs {
		if s.idle != nil {
			s.idle.Stop()
			s.idle = nil
		}
		if s.cancel != nil {
			s.cancel()
			s.cancel, s.conn = nil, nil
		}
	}
	h.mu.Unlock()
	h.wg.Wait()
}
