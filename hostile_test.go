package redlock

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redlockgo/redlock/internal/fakeredis"
	"github.com/redlockgo/redlock/internal/redistest"
)

// hostileReplies are script replies (after a valid INFO) or INFO replies
// that a broken or hostile peer might send.
var hostileReplies = []struct {
	name   string
	resp   fakeredis.Response
	atInfo bool   // send it in reply to INFO instead of the script
	want   string // in the node's error
}{
	{name: "garbage", resp: fakeredis.Response{Bytes: []byte("hello world\r\n")}, want: "unexpected response line"},
	{name: "binary garbage", resp: fakeredis.Response{Bytes: []byte{0, 1, 2, 0xff, '\r', '\n'}}, want: "unexpected response line"},
	{name: "simple string", resp: fakeredis.Response{Bytes: []byte("+OK\r\n")}, want: "unexpected acquire reply"},
	{name: "integer", resp: fakeredis.Response{Bytes: []byte(":1\r\n")}, want: "unexpected acquire reply"},
	{name: "bulk", resp: fakeredis.Response{Bytes: []byte("$1\r\n1\r\n")}, want: "unexpected acquire reply"},
	{name: "nil", resp: fakeredis.Response{Bytes: []byte("$-1\r\n")}, want: "unexpected acquire reply"},
	{name: "long array", resp: fakeredis.Response{Bytes: []byte("*3\r\n:1\r\n:1\r\n:1\r\n")}, want: "unexpected acquire reply"},
	{name: "nested array", resp: fakeredis.Response{Bytes: []byte("*1\r\n*1\r\n:1\r\n")}, want: "unexpected acquire reply"},
	{name: "array of strings", resp: fakeredis.Response{Bytes: []byte("*1\r\n+1\r\n")}, want: "unexpected acquire reply"},
	{name: "error reply", resp: fakeredis.Response{Bytes: []byte("-ERR no\r\n")}, want: "ERR no"},
	{name: "truncated array then close", resp: fakeredis.Response{Bytes: []byte("*2\r\n:0\r\n"), Close: true}, want: "EOF"},
	{name: "truncated bulk then hang", resp: fakeredis.Response{Bytes: []byte("$10\r\nabc"), Hang: true}, want: "no reply within"},
	{name: "bad bulk terminator", resp: fakeredis.Response{Bytes: []byte("$1\r\n1xx\r\n")}, want: "bad bulk string format"},
	{name: "huge bulk", resp: fakeredis.Response{Bytes: []byte("$99999999999\r\n"), Hang: true}, want: "oversized reply"},
	{name: "bulk length overflow", resp: fakeredis.Response{Bytes: []byte("$9223372036854775807\r\n")}, want: "oversized reply"},
	{name: "bulk length wraps negative", resp: fakeredis.Response{Bytes: []byte("$18446744073709551617\r\n")}, want: "oversized reply"},
	{name: "huge array", resp: fakeredis.Response{Bytes: []byte("*99999999999\r\n"), Hang: true}, want: "oversized reply"},
	{name: "deep nesting", resp: fakeredis.Response{Bytes: bytes.Repeat([]byte("*1\r\n"), 1_000_000)}, want: "nested deeper"},
	{name: "negative length", resp: fakeredis.Response{Bytes: []byte("$-5\r\n")}, want: "illegal bytes in length"},
	{name: "endless line", resp: fakeredis.Response{Bytes: append([]byte("+"), bytes.Repeat([]byte("a"), 1<<20)...)}, want: "line longer than"},
	{name: "nothing", resp: fakeredis.Response{Hang: true}, want: "no reply within"},
	{name: "hang up", resp: fakeredis.Response{Close: true}, want: "EOF"},
	{name: "INFO nothing", resp: fakeredis.Response{Hang: true}, atInfo: true, want: "no reply within"},
	{name: "INFO integer", resp: fakeredis.Response{Bytes: []byte(":1\r\n")}, atInfo: true, want: "first contact (INFO)"},
	{name: "INFO huge", resp: fakeredis.Response{Bytes: []byte("$2000000000\r\n"), Hang: true}, atInfo: true, want: "oversized reply"},
	{name: "INFO replica", resp: fakeredis.Response{Bytes: []byte("$10\r\nrole:slave\r\n")}, atInfo: true, want: "not a master"},
}

// hostileNode starts a fake server that answers INFO as a master (unless
// atInfo) and then sends resp to every other command.
func hostileNode(t *testing.T, resp fakeredis.Response, atInfo bool) *fakeredis.Server {
	var s *fakeredis.Server
	s = fakeredis.Start(t, func(cmd []string) fakeredis.Response {
		if strings.EqualFold(cmd[0], "INFO") && !atInfo {
			return fakeredis.Response{Bytes: fakeredis.Info("fake-" + s.Addr)}
		}
		return resp
	})
	return s
}

// TestHostilePeers: each broken peer is one failed node with a clear
// NodeError; nothing panics, nothing waits past the per-node timeout, and
// real nodes beside it still decide.
func TestHostilePeers(t *testing.T) {
	const timeout = 300 * time.Millisecond
	real := redistest.Start(t, 2)
	ctx := context.Background()
	for _, tt := range hostileReplies {
		t.Run(tt.name, func(t *testing.T) {
			var urls []string
			for range 3 {
				urls = append(urls, hostileNode(t, tt.resp, tt.atInfo).Addr)
			}
			c, err := Dial(urls, WithNodeTimeout(timeout))
			require.NoError(t, err)
			defer c.Close()
			for _, op := range []string{"TryLock", "again"} { // the second after first contact
				start := time.Now()
				var lerr error
				require.NotPanics(t, func() { _, lerr = c.TryLock(ctx, "k", 10*time.Second) }, op)
				took := time.Since(start)
				require.Error(t, lerr, op)
				assert.ErrorIs(t, lerr, ErrQuorumUnreachable, op)
				failed := 0
				for _, e := range unwrapAll(lerr) {
					if ne, ok := e.(*NodeError); ok {
						failed++
						assert.Contains(t, urls, ne.Addr)
						if tt.want == "EOF" && (strings.Contains(ne.Error(), "connection reset by peer") || strings.Contains(ne.Error(), "broken pipe")) {
							// A peer that hangs up with pipelined commands still
							// unread in its buffer resets the connection instead,
							// which a read or the next write finds first.
							continue
						}
						assert.Contains(t, ne.Error(), tt.want, op)
					}
				}
				assert.GreaterOrEqual(t, failed, 2, "a quorum's worth of failed nodes: %v", lerr)
				// One timeout for the attempt, one for the release of the
				// miss; measured ≈ 2×timeout for hanging peers, ms otherwise.
				assert.Less(t, took, 2*timeout+5*timeout, "%s took %v", op, took)
			}

			// Beside two real nodes the hostile one is merely outvoted.
			mixed, err := Dial(append([]string{urls[0]}, redistest.Addrs(real)...), WithNodeTimeout(timeout))
			require.NoError(t, err)
			defer mixed.Close()
			l, err := mixed.TryLock(ctx, "k-"+tt.name, 10*time.Second)
			require.NoError(t, err)
			require.NoError(t, l.Extend(ctx, 10*time.Second))
			require.NoError(t, l.Unlock(ctx))
		})
	}
}

// TestReplyGuard checks the framing the guard follows and the limits it
// enforces, fed in pieces of every size.
func TestReplyGuard(t *testing.T) {
	for _, tt := range []struct {
		in    string
		limit bool // the guard must refuse it
	}{
		{in: "+OK\r\n"},
		{in: ":12\r\n-ERR x\r\n"},
		{in: "$5\r\n*9999\r\n"}, // a header inside a bulk payload is data
		{in: "$0\r\n\r\n$-1\r\n*-1\r\n*0\r\n"},
		{in: "*2\r\n:0\r\n:1500\r\n*1\r\n:1\r\n"},
		{in: fmt.Sprintf("$%d\r\n%s\r\n", maxReplyBulk, strings.Repeat("x", maxReplyBulk))},
		{in: fmt.Sprintf("$%d\r\n", maxReplyBulk+1), limit: true},
		{in: fmt.Sprintf("*%d\r\n", maxReplyArray+1), limit: true},
		{in: strings.Repeat("*1\r\n", maxReplyDepth) + ":1\r\n"},
		{in: "-" + strings.Repeat("e", maxReplyLine-2) + "\r\n"}, // the limit counts the CR
		{in: "-" + strings.Repeat("e", maxReplyLine+1), limit: true},
		{in: strings.Repeat("*1\r\n", maxReplyDepth+1), limit: true},
		// Sibling arrays do not add up to depth.
		{in: strings.Repeat("*1\r\n*1\r\n:1\r\n", 100)},
		{in: "*2\r\n*1\r\n:1\r\n" + strings.Repeat("*1\r\n", maxReplyDepth-1) + ":1\r\n"},
		{in: "*2\r\n*1\r\n:1\r\n" + strings.Repeat("*1\r\n", maxReplyDepth), limit: true},
	} {
		for _, chunk := range []int{1, 2, 3, 7, 1 << 30} {
			g := &replyGuard{}
			var err error
			for b := []byte(tt.in); len(b) > 0 && err == nil; {
				k := min(chunk, len(b))
				err = g.scan(b[:k])
				b = b[k:]
			}
			if tt.limit {
				assert.ErrorIs(t, err, errHostileReply, "%.40q chunk %d", tt.in, chunk)
			} else {
				assert.NoError(t, err, "%.40q chunk %d", tt.in, chunk)
				assert.Empty(t, g.stack, "%.40q chunk %d: every array closed", tt.in, chunk)
			}
		}
	}
}

// A node older than Redis 6.2 cannot run the wait queue (ZADD ... LT): the
// error its script returns says so instead of a bare syntax error.
func TestOldRedisExplained(t *testing.T) {
	body := "# Server\r\nredis_version:6.0.16\r\nrun_id:old\r\n# Replication\r\nrole:master\r\n"
	info := []byte(fmt.Sprintf("$%d\r\n%s\r\n", len(body), body))
	s := fakeredis.Start(t, func(cmd []string) fakeredis.Response {
		if strings.EqualFold(cmd[0], "INFO") {
			return fakeredis.Response{Bytes: info}
		}
		return fakeredis.Response{Bytes: []byte("-ERR syntax error\r\n")}
	})
	c, err := Dial([]string{s.Addr}, WithNodeTimeout(time.Second))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.TryLock(context.Background(), "k", 10*time.Second)
	require.Error(t, err)
	var ne *NodeError
	require.ErrorAs(t, err, &ne)
	assert.Contains(t, ne.Error(), "syntax error")
	assert.Contains(t, ne.Error(), "runs Redis 6.0.16; Lock and Do need 6.2 or newer")
}

func TestTooOld(t *testing.T) {
	for v, want := range map[string]bool{
		"2.6.12": true, "5.0.14": true, "6.0.16": true, "6.2.0": false, "6.2.14": false,
		"7.0.15": false, "10.0.0": false, "": false, "unknown": false, "7": false,
	} {
		assert.Equal(t, want, tooOld(v), v)
	}
}
