package redlock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The fuzz targets' seeds (f.Add) run in every `go test`; fuzz them with e.g.
//
//	go test -run '^$' -fuzz '^FuzzReply$' -fuzztime 3m -parallel 1 .
//
// docs/security.md records how long each ran.

// FuzzParseEndpoint: any string either parses to an endpoint whose address
// parses again to itself, or gives an error; it never panics.
func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{
		"127.0.0.1:6379", "redis://u:p@h:1/2", "rediss://:p@[::1]:6380", "redis://h", "h:0",
		"redis://[::1", "redis://u:p@h:1?x#y", "REDIS://H:1", "redis://%zz@h:1", "redis:///1", "",
		"rediss://u:p@h:1/u:p@h:2", "redis://h:65535/2147483648", "[fe80::1%eth0]:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		ep, err := parseEndpoint(raw)
		if err != nil {
			require.True(t, strings.HasPrefix(err.Error(), "redlock: "), err.Error())
			return
		}
		again, err := parseEndpoint(ep.addr)
		require.NoError(t, err, "normalised address %q", ep.addr)
		assert.Equal(t, ep.addr, again.addr)
		assert.Equal(t, ep.addr, ep.String())
		assert.GreaterOrEqual(t, ep.db, 0)
		assert.Contains(t, []string{"", "redis", "rediss"}, ep.scheme)
	})
}

// FuzzEndpointRedaction: a password placed as userinfo, in any URL around
// it, never appears in an error of parseEndpoint or Dial, nor in the Client.
func FuzzEndpointRedaction(f *testing.F) {
	for _, s := range [][3]string{
		{"redis", "u", "h:1"}, {"rediss", "", "h:1/2"}, {"redis", "u", "[::1"}, {"ftp", "u", "h:1"},
		{"redis", "a/b", "h:1"}, {"redis", "u", "h:1/x"}, {"redis", "u?", "h:1"}, {"redis", "u#", "h:1"},
		{"redis", "u", "h:99999"}, {"re dis", "u", "h:1"}, {"redis", "%zz", "h:1"}, {"", "", ""},
	} {
		f.Add(s[0], s[1], s[2])
	}
	const secret = "Zq9sEcReTpw"
	f.Fuzz(func(t *testing.T, scheme, user, rest string) {
		if strings.Contains(rest, secret[:4]) || strings.Contains(scheme+user, secret[:4]) {
			return // the secret must appear once, as the password
		}
		raw := scheme + "://" + user + ":" + secret + "@" + rest
		ep, err := parseEndpoint(raw)
		if err != nil {
			require.NotContains(t, err.Error(), secret)
		} else {
			require.NotContains(t, ep.String(), secret)
		}
		c, err := Dial([]string{raw})
		if err != nil {
			require.NotContains(t, err.Error(), secret)
			return
		}
		defer c.Close()
		for _, verb := range []string{"%v", "%+v", "%#v"} {
			require.NotContains(t, fmt.Sprintf(verb, c), secret)
		}
	})
}

// FuzzReply feeds arbitrary bytes, through the reply guard, to redigo's
// reply reader and to every function that interprets a reply. Only the
// one-element array may grant a lock (redigo also reads the bulk "1" as 1),
// only 1 may be a yes.
func FuzzReply(f *testing.F) {
	for _, s := range []string{
		"*1\r\n:1\r\n", "*2\r\n:0\r\n:1500\r\n", ":1\r\n", ":0\r\n", ":2\r\n", "-NOSCRIPT x\r\n",
		"$-1\r\n", "*-1\r\n", "+OK\r\n", "$21\r\nrun_id:x\r\nrole:master\r\n", "*1\r\n*1\r\n:1\r\n",
		"$99999999999\r\n", "*3\r\n$1\r\n1\r\n:1\r\n*0\r\n", "*1\r\n$1\r\n1\r\n", "hello\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := redis.NewConn(&replyGuard{Conn: &replayConn{data: data}}, 0, 0)
		defer c.Close()
		for range 8 {
			reply, err := c.Do("EVALSHA")
			if err != nil {
				return
			}
			v, _, _, err := parseAcquire(reply)
			if v == voteYes {
				require.NoError(t, err)
				arr, ok := reply.([]interface{})
				require.True(t, ok && len(arr) == 1, "only a one-element array grants a lock: %#v", reply)
			}
			if v, err := parseFlag("release", reply); v == voteYes {
				require.NoError(t, err)
				require.Contains(t, []interface{}{int64(1), []byte("1")}, reply)
			}
			if s, err := redis.String(reply, nil); err == nil {
				parseInfo(s)
			}
		}
	})
}

// FuzzClient runs a whole TryLock/Extend/Unlock against three nodes that
// answer first contact correctly and then replay the fuzzed bytes to every
// script: nothing may panic or hang, failures are classified, and a lock is
// granted only when the bytes hold a one-element array.
func FuzzClient(f *testing.F) {
	for _, s := range []string{
		"*1\r\n:1\r\n:1\r\n:1\r\n", "*2\r\n:0\r\n:100\r\n:0\r\n", "-NOSCRIPT x\r\n*1\r\n:1\r\n",
		"-WRONGTYPE x\r\n", "-OOM x\r\n", "*1\r\n:1\r\n-READONLY x\r\n", "$99999999999\r\n", "",
		"*1\r\n:1", "*1\r\n:1\r\n:2\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pools := make([]Pool, 3)
		for i := range pools {
			pools[i] = &replayPool{info: fuzzInfo(i), data: data}
		}
		c, err := New(pools, WithNodeTimeout(time.Second))
		require.NoError(t, err)
		defer c.Close()
		ctx := context.Background()
		l, err := c.TryLock(ctx, "k", 10*time.Second)
		if err != nil {
			require.ErrorIs(t, err, ErrNotObtained)
			return
		}
		require.True(t, bytes.Contains(data, []byte("*1\r\n")), "granted without a one-element array reply: %q", data)
		if err := l.Extend(ctx, 10*time.Second); err != nil {
			require.True(t, errors.Is(err, ErrLockLost) || errors.Is(err, ErrQuorumUnreachable), err.Error())
		}
		if err := l.Unlock(ctx); err != nil {
			require.True(t, errors.Is(err, ErrLockLost) || errors.Is(err, ErrQuorumUnreachable), err.Error())
		}
	})
}

func fuzzInfo(i int) []byte {
	body := "run_id:fuzz" + string(rune('a'+i)) + "\r\nrole:master\r\n"
	return []byte("$" + strconv.Itoa(len(body)) + "\r\n" + body + "\r\n")
}

// replayPool hands out connections that answer INFO with info and anything
// else with data, through the reply guard as Dial's connections do.
type replayPool struct {
	info, data []byte
}

func (p *replayPool) GetContext(context.Context) (redis.Conn, error) {
	return redis.NewConn(&replyGuard{Conn: &replayConn{data: p.data, info: p.info}}, 0, 0), nil
}

// replayConn is a net.Conn that discards what is written and replays canned
// bytes: info if the first command written is INFO, data otherwise. At the
// end of its bytes it reports EOF, so nothing waits.
type replayConn struct {
	info, data []byte
	mu         sync.Mutex
	r          io.Reader
}

func (c *replayConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.r == nil {
		if c.info != nil && bytes.Contains(p, []byte("INFO")) {
			c.r = bytes.NewReader(c.info)
		} else {
			c.r = bytes.NewReader(c.data)
		}
	}
	return len(p), nil
}

func (c *replayConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.r == nil {
		c.r = bytes.NewReader(c.data)
	}
	return c.r.Read(p)
}

func (c *replayConn) Close() error                     { return nil }
func (c *replayConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *replayConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *replayConn) SetDeadline(time.Time) error      { return nil }
func (c *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(time.Time) error { return nil }
