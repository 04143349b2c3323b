package redlock

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redlockgo/redlock/internal/fakeredis"
	"github.com/redlockgo/redlock/internal/redistest"
)

// TestTLS runs locks over servers that accept only TLS and require client
// certificates, and checks that a wrong CA or a missing client certificate
// fails clearly without counting the node.
func TestTLS(t *testing.T) {
	certs := redistest.NewCerts(t)
	servers := redistest.StartTLS(t, 3, certs.ServerTLS(true))
	ctx := context.Background()

	cfg := certs.ClientConfig()
	for name, urls := range map[string][]string{
		"host:port": redistest.Addrs(servers),
		"rediss":    urlsOf("rediss://", servers),
		"localhost": {strings.Replace(servers[0].Addr, "127.0.0.1", "localhost", 1), servers[1].Addr, servers[2].Addr},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := Dial(urls, WithTLSConfig(cfg))
			require.NoError(t, err)
			defer c.Close()
			l, err := c.TryLock(ctx, "tls-"+name, 10*time.Second)
			require.NoError(t, err)
			// TryLock returns at a quorum; the last node may still be answering.
			assert.Eventually(t, func() bool {
				for _, s := range servers {
					if v, _ := holder(t, s, "tls-"+name); v != l.Token() {
						return false
					}
				}
				return true
			}, 5*time.Second, 2*time.Millisecond, "every node is reachable over TLS")
			require.NoError(t, l.Unlock(ctx))
		})
	}
	assert.Empty(t, cfg.ServerName, "the caller's tls.Config is never modified")

	t.Run("wrong CA", func(t *testing.T) {
		other := redistest.NewCerts(t)
		c, err := Dial(redistest.Addrs(servers), WithTLSConfig(other.ClientConfig()), WithNodeTimeout(time.Second))
		require.NoError(t, err)
		defer c.Close()
		_, err = c.TryLock(ctx, "k", 10*time.Second)
		require.Error(t, err)
		assert.ErrorIs(t, err, ErrQuorumUnreachable)
		var ne *NodeError
		require.ErrorAs(t, err, &ne)
		assert.Contains(t, err.Error(), "TLS handshake")
		assert.Contains(t, err.Error(), "certificate signed by unknown authority")
	})
	t.Run("system roots", func(t *testing.T) {
		c, err := Dial(urlsOf("rediss://", servers), WithNodeTimeout(time.Second))
		require.NoError(t, err)
		defer c.Close()
		_, err = c.TryLock(ctx, "k", 10*time.Second)
		assert.ErrorIs(t, err, ErrQuorumUnreachable)
		assert.Contains(t, err.Error(), "unknown authority")
	})
	t.Run("no client certificate", func(t *testing.T) {
		c, err := Dial(redistest.Addrs(servers), WithTLSConfig(&tls.Config{RootCAs: certs.CAPool}), WithNodeTimeout(time.Second))
		require.NoError(t, err)
		defer c.Close()
		_, err = c.TryLock(ctx, "k", 10*time.Second)
		assert.ErrorIs(t, err, ErrQuorumUnreachable)
	})
	t.Run("plaintext to a TLS port", func(t *testing.T) {
		c, err := Dial(redistest.Addrs(servers), WithNodeTimeout(200*time.Millisecond))
		require.NoError(t, err)
		defer c.Close()
		_, err = c.TryLock(ctx, "k", 10*time.Second)
		assert.ErrorIs(t, err, ErrQuorumUnreachable)
	})
	t.Run("redis:// with WithTLSConfig is refused", func(t *testing.T) {
		_, err := Dial(urlsOf("redis://", servers), WithTLSConfig(cfg))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "plaintext")
	})
	t.Run("New refuses WithTLSConfig", func(t *testing.T) {
		_, err := New([]Pool{&fakePool{}}, WithTLSConfig(cfg))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "Dial only")
	})
	t.Run("nil config", func(t *testing.T) {
		_, err := Dial([]string{"h:1"}, WithTLSConfig(nil))
		assert.ErrorContains(t, err, "WithTLSConfig(nil)")
	})
}

// TestTLSHandshakeBoundedByNodeTimeout: a peer that accepts TCP but never
// answers the ClientHello must cost one per-node timeout, not redigo's 10 s.
func TestTLSHandshakeBoundedByNodeTimeout(t *testing.T) {
	var urls []string
	for i := 0; i < 3; i++ {
		s := fakeredis.Start(t, func([]string) fakeredis.Response { return fakeredis.Response{Hang: true} })
		urls = append(urls, "rediss://"+s.Addr)
	}
	const timeout = 200 * time.Millisecond
	c, err := Dial(urls, WithNodeTimeout(timeout))
	require.NoError(t, err)
	defer c.Close()
	start := time.Now()
	_, err = c.TryLock(context.Background(), "k", 10*time.Second)
	took := time.Since(start)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrNodeTimeout)
	assert.Less(t, took, 5*timeout, "measured ~%v on an idle machine", timeout)
}

func urlsOf(scheme string, servers []*redistest.Server) []string {
	u := make([]string, len(servers))
	for i, s := range servers {
		u[i] = scheme + s.Addr
	}
	return u
}

// lockACL is the minimal ACL of a lock user documented in docs/security.md:
// INFO at first contact, EVALSHA/EVAL for the scripts, and the commands the
// scripts call, on the lock keys only.
const lockACL = "resetkeys ~lock:* resetchannels &redlock:released:lock:* -@all +info +evalsha +eval +get +set +pexpire +pttl +del +exists +time +zadd +zrem +zrank +zrange +zrangebyscore +zscore +zcard +publish +subscribe"

// aclServers starts n servers with a default password and users set up by
// ACL SETUSER rules.
func aclServers(t *testing.T, n int, users map[string]string) []*redistest.Server {
	servers := redistest.Start(t, n, "--requirepass", "adm1n-pw")
	for _, s := range servers {
		c, err := s.Conn()
		require.NoError(t, err)
		_, err = c.Do("AUTH", "adm1n-pw")
		require.NoError(t, err)
		for user, rules := range users {
			args := []interface{}{user}
			for _, r := range strings.Fields(rules) {
				args = append(args, r)
			}
			_, err = c.Do("ACL", append([]interface{}{"SETUSER"}, args...)...)
			require.NoError(t, err, "ACL SETUSER %s", rules)
		}
		c.Close()
	}
	return servers
}

func TestACLUsers(t *testing.T) {
	servers := aclServers(t, 3, map[string]string{
		"locker":    "on >l0cker-pw " + lockACL,
		"noscripts": "on >n0scripts-pw ~* +@all -evalsha -eval",
		"noset":     "on >n0set-pw " + strings.Replace(lockACL, " +set", "", 1),
		"disabled":  "off >d1sabled-pw ~* +@all",
	})
	ctx := context.Background()
	urls := func(userinfo string) []string { return urlsOf("redis://"+userinfo+"@", servers) }

	t.Run("minimal ACL suffices", func(t *testing.T) {
		c, err := Dial(urls("locker:l0cker-pw"), WithKeyPrefix("lock:"))
		require.NoError(t, err)
		defer c.Close()
		l, err := c.TryLock(ctx, "k", 10*time.Second)
		require.NoError(t, err)
		require.NoError(t, l.Extend(ctx, 20*time.Second))
		// A contended attempt uses PTTL; a flushed script cache uses EVAL.
		for _, s := range servers {
			adminDo(t, s, "SCRIPT", "FLUSH")
		}
		_, err = c.TryLock(ctx, "k", 10*time.Second)
		require.ErrorIs(t, err, ErrNotObtained)
		assert.NotErrorIs(t, err, ErrQuorumUnreachable, "contended, not failed: %v", err)
		// A waiting Lock of another Client queues, subscribes, and is woken
		// by the release (its timer would take 5 s).
		c2, err := Dial(urls("locker:l0cker-pw"), WithKeyPrefix("lock:"))
		require.NoError(t, err)
		defer c2.Close()
		res := lockInBackground(ctx, c2, "k", 10*time.Second)
		time.Sleep(200 * time.Millisecond)
		require.NoError(t, l.Unlock(ctx))
		select {
		case r := <-res:
			require.NoError(t, r.err)
			require.NoError(t, r.l.Unlock(ctx))
		case <-time.After(3 * time.Second):
			t.Fatal("the waiting Lock was not woken by the release")
		}
	})
	failures := []struct {
		name, userinfo string
		want           []string
	}{
		{"wrong password", "locker:wr0ng-pw", []string{"WRONGPASS"}},
		{"unknown user", "nobody:n0body-pw", []string{"WRONGPASS"}},
		{"disabled user", "disabled:d1sabled-pw", []string{"WRONGPASS"}},
		{"no password", "locker:", []string{"NOAUTH"}},
		{"no script permission", "noscripts:n0scripts-pw", []string{"NOPERM", "'eval'"}}, // a script goes as EVAL first on each connection
		{"script command denied", "noset:n0set-pw", []string{"user executing the script can't run this command"}},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Dial(urls(tt.userinfo), WithKeyPrefix("lock:"))
			require.NoError(t, err)
			defer c.Close()
			_, err = c.TryLock(ctx, "k", 10*time.Second)
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrQuorumUnreachable)
			var ne *NodeError
			require.ErrorAs(t, err, &ne)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
			assertNoSecret(t, err, c)
			for _, s := range servers {
				assert.Equal(t, int64(0), adminDo(t, s, "EXISTS", "lock:k"), "no key left behind")
			}
		})
	}
}

// secrets are the passwords used by the tests of this file.
var secrets = []string{"l0cker-pw", "wr0ng-pw", "n0body-pw", "n0scripts-pw", "n0set-pw", "d1sabled-pw", "adm1n-pw", "s3cret"}

// assertNoSecret checks every rendering of err and of c for passwords.
func assertNoSecret(t *testing.T, err error, c *Client) {
	t.Helper()
	var texts []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		texts = append(texts, fmt.Sprintf(verb, err))
		if c != nil {
			texts = append(texts, fmt.Sprintf(verb, c))
		}
	}
	for _, e := range unwrapAll(err) {
		texts = append(texts, e.Error(), fmt.Sprintf("%#v", e))
	}
	for _, text := range texts {
		for _, s := range secrets {
			require.NotContains(t, text, s)
		}
	}
}

// TestNoSecretInErrors renders the errors of every failure mode that involves
// a URL with a password, and the Client itself, looking for the password.
func TestNoSecretInErrors(t *testing.T) {
	servers := redistest.Start(t, 1, "--requirepass", "adm1n-pw")
	certs := redistest.NewCerts(t)
	tlsServers := redistest.StartTLS(t, 1, certs.ServerTLS(false), "--requirepass", "adm1n-pw")
	dead := redistest.Start(t, 1)
	dead[0].Kill()
	hung := fakeredis.Start(t, func([]string) fakeredis.Response { return fakeredis.Response{Hang: true} })
	garbage := fakeredis.Start(t, func([]string) fakeredis.Response {
		return fakeredis.Response{Bytes: []byte("-ERR s3cret l0cker-pw\r\n")}
	})
	ctx := context.Background()

	for _, tt := range []struct {
		name string
		urls []string
		opts []Option
	}{
		{"wrong password", []string{"redis://default:wr0ng-pw@" + servers[0].Addr}, nil},
		{"wrong password, lone", []string{"redis://wr0ng-pw@" + servers[0].Addr}, nil},
		{"unreachable host", []string{"redis://u:l0cker-pw@" + dead[0].Addr}, nil},
		{"unresolvable host", []string{"redis://u:l0cker-pw@no-such-host.invalid:6379"}, nil},
		{"hung node", []string{"redis://u:l0cker-pw@" + hung.Addr}, []Option{WithNodeTimeout(100 * time.Millisecond)}},
		{"TLS failure", []string{"rediss://u:l0cker-pw@" + tlsServers[0].Addr}, nil},
		{"TLS, wrong password", []string{"rediss://u:wr0ng-pw@" + tlsServers[0].Addr}, []Option{WithTLSConfig(certs.ClientConfig())}},
		{"plaintext to TLS", []string{"redis://u:l0cker-pw@" + tlsServers[0].Addr}, []Option{WithNodeTimeout(100 * time.Millisecond)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Dial(tt.urls, tt.opts...)
			require.NoError(t, err)
			defer c.Close()
			var lerr error
			require.NotPanics(t, func() { _, lerr = c.TryLock(ctx, "k", time.Second) })
			require.Error(t, lerr)
			var ne *NodeError
			require.ErrorAs(t, lerr, &ne)
			assertNoSecret(t, lerr, c)
		})
	}
	// A node that echoes a password in its own error reply is the server's
	// doing; the library adds none. Still, the Client's own text is clean.
	c, err := Dial([]string{"redis://u:n0set-pw@" + garbage.Addr})
	require.NoError(t, err)
	defer c.Close()
	_, err = c.TryLock(ctx, "k", time.Second)
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "n0set-pw")

	for _, raw := range []string{
		"redis://u:l0cker-pw@[::1", "redis://u:l0cker-pw@h:99999", "rediss://u:l0cker-pw@h:1?x=1",
		"redis://h:1/u:l0cker-pw@h:2", "ftp://u:l0cker-pw@h:1", "u:l0cker-pw@h:1",
	} {
		_, err := Dial([]string{raw})
		require.Error(t, err, raw)
		assertNoSecret(t, err, nil)
	}
	_, err = Dial([]string{"redis://u:l0cker-pw@h:1"}, WithTLSConfig(&tls.Config{}))
	require.Error(t, err)
	assertNoSecret(t, err, nil)
}

// TestClientString: the Client prints its nodes, never its credentials.
func TestClientString(t *testing.T) {
	c, err := Dial([]string{"redis://alice:s3cret@127.0.0.1:1", "rediss://:s3cret@LOCALHOST:2/3"})
	require.NoError(t, err)
	defer c.Close()
	want := "redlock.Client{nodes: [127.0.0.1:1 localhost:2]}"
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		assert.Equal(t, want, fmt.Sprintf(verb, c), verb)
	}
	assert.Equal(t, "redlock.Client(nil)", (*Client)(nil).String())
}

// fakePool is a Pool that is never used.
type fakePool struct{}

func (*fakePool) GetContext(context.Context) (redis.Conn, error) { return nil, errors.New("unused") }

// adminDo runs one command on s as the default user of aclServers.
func adminDo(t *testing.T, s *redistest.Server, cmd string, args ...interface{}) interface{} {
	t.Helper()
	c, err := s.Conn()
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Do("AUTH", "adm1n-pw")
	require.NoError(t, err)
	v, err := c.Do(cmd, args...)
	require.NoError(t, err)
	return v
}
