package redlock

import (
	"errors"
	"fmt"
	"net"
)

// Limits on what a node may send. Our replies are tiny (INFO is a few KB, the
// scripts answer integers or two-element arrays), so these bounds are far
// above anything a real server sends us, yet far below what could hurt.
const (
	maxReplyBulk  = 1 << 20  // bytes in one bulk string
	maxReplyArray = 1024     // elements in one array
	maxReplyDepth = 8        // nested arrays
	maxReplyLine  = 64 << 10 // bytes in one line (simple string, error, header)
)

// errHostileReply is the cause when a node's reply exceeds the limits above.
var errHostileReply = errors.New("redlock: malformed or oversized reply from node")

// replyGuard screens the RESP stream read from a node before redigo parses
// it. redigo allocates whatever a bulk or array header announces
// (make([]byte, n)), recurses into nested arrays and accumulates a line until
// its '\n', inside a goroutine of its own: a broken or hostile peer announcing
// "$9999999999999", nesting arrays a million deep or streaming a line without
// end would crash the whole process with a panic or an out-of-memory error
// that no recover can catch. The guard follows the
// stream's framing as the bytes pass and fails the read, closing nothing
// itself (redigo then closes the connection), as soon as a header exceeds
// the limits. Malformed framing it cannot follow is left for redigo to
// reject.
type replyGuard struct {
	net.Conn
	err   error
	skip  int64   // bytes of a bulk payload (with its CRLF) still to pass through
	line  []byte  // the start of the line read so far (enough for a header)
	n     int     // length of the line read so far
	stack []int64 // elements still expected by each open array
}

func (g *replyGuard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.Conn.Read(p)
	if gerr := g.scan(p[:n]); gerr != nil {
		g.err = gerr
		return 0, gerr
	}
	return n, err
}

// scan advances the framing state over b.
func (g *replyGuard) scan(b []byte) error {
	for len(b) > 0 {
		if g.skip > 0 {
			k := min(g.skip, int64(len(b)))
			g.skip -= k
			b = b[k:]
			if g.skip == 0 {
				g.element()
			}
			continue
		}
		c := b[0]
		b = b[1:]
		if c != '\n' {
			if len(g.line) < 64 { // only headers are interpreted; longer lines are text
				g.line = append(g.line, c)
			}
			if g.n++; g.n > maxReplyLine {
				return fmt.Errorf("%w: line longer than %d bytes", errHostileReply, maxReplyLine)
			}
			continue
		}
		if err := g.header(); err != nil {
			return err
		}
		g.line, g.n = g.line[:0], 0
	}
	return nil
}

// header interprets one complete line.
func (g *replyGuard) header() error {
	line := g.line
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	if len(line) == 0 || (line[0] != '$' && line[0] != '*') {
		g.element() // simple string, error, integer, or garbage for redigo to reject
		return nil
	}
	n, ok := parseHeaderLen(line[1:])
	switch {
	case !ok:
		g.element() // redigo rejects it
	case n < 0:
		g.element() // null bulk or array
	case line[0] == '$' && n > maxReplyBulk:
		return fmt.Errorf("%w: bulk string of %s bytes (limit %d)", errHostileReply, line[1:], maxReplyBulk)
	case line[0] == '$':
		g.skip = n + 2
	case n > maxReplyArray:
		return fmt.Errorf("%w: array of %s elements (limit %d)", errHostileReply, line[1:], maxReplyArray)
	case n == 0:
		g.element()
	case len(g.stack) >= maxReplyDepth:
		return fmt.Errorf("%w: arrays nested deeper than %d", errHostileReply, maxReplyDepth)
	default:
		g.stack = append(g.stack, n)
	}
	return nil
}

// element records that one complete value was read, closing the arrays it
// completes.
func (g *replyGuard) element() {
	for len(g.stack) > 0 {
		top := len(g.stack) - 1
		g.stack[top]--
		if g.stack[top] > 0 {
			return
		}
		g.stack = g.stack[:top]
	}
}

// parseHeaderLen parses the length of a bulk or array header as redigo does
// ("-1" or digits), saturating instead of overflowing.
func parseHeaderLen(p []byte) (int64, bool) {
	if string(p) == "-1" {
		return -1, true
	}
	if len(p) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range p {
		if c < '0' || c > '9' {
			return 0, false
		}
		if n < 1<<40 {
			n = n*10 + int64(c-'0')
		}
	}
	return n, true
}
