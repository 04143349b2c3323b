package redlock

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Pool is the source of connections to one Redis node. A *redis.Pool
// satisfies it. The Client bounds each round trip, including GetContext, by
// the per-node timeout through ctx; a pool that dials without honouring ctx
// (redis.Pool.Dial rather than DialContext) can exceed it. Connections must
// implement redis.ConnWithContext, as redigo's do.
type Pool interface {
	GetContext(ctx context.Context) (redis.Conn, error)
}

var _ Pool = (*redis.Pool)(nil)

// Connection pool settings for the pools that Dial creates.
const (
	// DefaultMaxIdle is the number of idle connections kept per node.
	DefaultMaxIdle = 64
	// DefaultIdleTimeout closes connections idle for longer.
	DefaultIdleTimeout = 5 * time.Minute
)

// endpoint is a parsed node URL. String never shows the password.
type endpoint struct {
	addr     string // normalised host:port
	username string
	password string
	db       int
	scheme   string // "redis", "rediss" or "" (bare host:port)
}

func (e endpoint) String() string { return e.addr }

// parseEndpoint accepts "redis://[user:password@]host:port[/db]", the same
// with "rediss://" (TLS), and "host:port". Errors never contain the
// password: url.Parse's own errors repeat the raw URL, so they are not passed
// through when it has userinfo.
func parseEndpoint(raw string) (endpoint, error) {
	var ep endpoint
	if strings.TrimSpace(raw) == "" {
		return ep, errors.New("redlock: empty node URL")
	}
	if !strings.Contains(raw, "://") {
		if at := strings.LastIndex(raw, "@"); at >= 0 {
			return ep, fmt.Errorf("redlock: node %q: credentials need the redis:// or rediss:// form", "xxxxx@"+raw[at+1:])
		}
		addr, err := normaliseAddr(raw)
		if err != nil {
			return ep, fmt.Errorf("redlock: node %q: %w", raw, err)
		}
		ep.addr = addr
		return ep, nil
	}
	shown := redactURL(raw)
	u, err := url.Parse(raw)
	if err != nil {
		if strings.Contains(raw, "@") {
			return ep, fmt.Errorf("redlock: node URL %q is malformed", shown)
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return ep, fmt.Errorf("redlock: node URL %q is malformed: %v", shown, err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return ep, fmt.Errorf("redlock: node URL %q: unsupported scheme %q (want redis:// or rediss://)", shown, u.Scheme)
	}
	ep.scheme = u.Scheme
	if u.Opaque != "" || u.RawQuery != "" || u.Fragment != "" {
		return ep, fmt.Errorf("redlock: node URL %q: unexpected query, fragment or opaque part", shown)
	}
	if ep.addr, err = normaliseAddr(u.Host); err != nil {
		return ep, fmt.Errorf("redlock: node URL %q: %w", shown, err)
	}
	if u.User != nil {
		ep.username = u.User.Username()
		ep.password, _ = u.User.Password()
		if _, set := u.User.Password(); !set {
			// redis://secret@host: a lone userinfo is the password (requirepass),
			// as redis-cli and redigo read it.
			ep.username, ep.password = "", u.User.Username()
		}
	}
	if p := strings.TrimPrefix(u.Path, "/"); p != "" {
		db, err := strconv.Atoi(p)
		if err != nil || db < 0 {
			if strings.Contains(raw, "@") {
				// The path of a malformed URL can hold what was meant as
				// userinfo ("redis://h:1/u:secret@h2:1"): never quote it.
				return ep, fmt.Errorf("redlock: node URL %q: the database is not a non-negative integer", shown)
			}
			return ep, fmt.Errorf("redlock: node URL %q: database %q is not a non-negative integer", shown, p)
		}
		ep.db = db
	}
	return ep, nil
}

// normaliseAddr validates host:port and returns it in canonical form
// (lower-case host, canonical IP text), so that duplicates are recognised.
func normaliseAddr(hostport string) (string, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", fmt.Errorf("want host:port: %v", err)
	}
	if host == "" {
		return "", errors.New("missing host")
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return "", fmt.Errorf("invalid port %q", port)
	}
	host = strings.ToLower(host)
	if ip := net.ParseIP(host); ip != nil {
		host = ip.String()
	}
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}

// redactURL hides the userinfo of a raw URL, parsed or not: everything
// between "://" and the last '@' (node URLs have no '@' in their path).
func redactURL(raw string) string {
	i := strings.Index(raw, "://")
	if i < 0 {
		return raw
	}
	if at := strings.LastIndex(raw[i+3:], "@"); at >= 0 {
		return raw[:i+3] + "xxxxx@" + raw[i+3+at+1:]
	}
	return raw
}

// tlsFor returns the TLS configuration for ep, or nil for plaintext. TLS is
// used for rediss:// URLs, and for every node when WithTLSConfig was given; a
// redis:// URL together with WithTLSConfig is refused rather than silently
// sent in clear. The result is a clone: the caller's config is never mutated.
func tlsFor(ep endpoint, cfg *tls.Config) (*tls.Config, error) {
	switch {
	case cfg == nil && ep.scheme != "rediss":
		return nil, nil
	case cfg != nil && ep.scheme == "redis":
		return nil, fmt.Errorf("redlock: node %s: redis:// asks for plaintext but WithTLSConfig was given (use rediss:// or host:port)", ep.addr)
	case cfg == nil:
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	cfg = cfg.Clone()
	if cfg.ServerName == "" {
		host, _, _ := net.SplitHostPort(ep.addr) // ep.addr is normalised: no error
		cfg.ServerName = strings.Trim(host, "[]")
	}
	return cfg, nil
}

// dialPool builds the connection pool for one endpoint; tc is its TLS
// configuration (nil: plaintext). Every new connection is passed to
// connected before it is handed out (the restart guard's run_id check); an
// error closes it. It also returns the pool's dialer, which the pipelined
// transport uses for its own connection: it returns the socket too.
func dialPool(ep endpoint, tc *tls.Config, connected func(context.Context, redis.Conn) error) (*redis.Pool, dialFunc) {
	dial := func(ctx context.Context) (redis.Conn, net.Conn, error) {
		c, nc, err := dialConn(ctx, ep, tc)
		if err != nil {
			return nil, nil, err
		}
		if err := connected(ctx, c); err != nil {
			c.Close()
			return nil, nil, err
		}
		return c, nc, nil
	}
	return &redis.Pool{
		MaxIdle:     DefaultMaxIdle,
		IdleTimeout: DefaultIdleTimeout,
		DialContext: func(ctx context.Context) (redis.Conn, error) {
			c, _, err := dial(ctx)
			return c, err
		},
	}, dial
}

// dialFunc dials a checked connection and returns it with its socket (TCP,
// or TLS over TCP).
type dialFunc func(ctx context.Context) (redis.Conn, net.Conn, error)

// dialConn dials one connection. The whole handshake (TCP connect, TLS, AUTH,
// SELECT) is bounded by ctx: the TLS handshake is done here under ctx rather
// than by redigo (whose own handshake timeout is 10 s), redigo bounds AUTH and
// SELECT by ctx itself, and the socket deadline set here bounds anything else;
// it is cleared before the connection is handed out so later commands set
// their own. Every reply read from the connection passes the replyGuard.
func dialConn(ctx context.Context, ep endpoint, tc *tls.Config) (redis.Conn, net.Conn, error) {
	var nc net.Conn
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if dl, ok := ctx.Deadline(); ok {
			_ = c.SetDeadline(dl)
		}
		if tc != nil {
			tlsConn := tls.Client(c, tc)
			if err := tlsConn.HandshakeContext(ctx); err != nil {
				c.Close()
				return nil, fmt.Errorf("TLS handshake with %s: %w", ep.addr, err)
			}
			c = tlsConn
		}
		nc = c
		return &replyGuard{Conn: c}, nil
	}
	opts := []redis.DialOption{redis.DialContextFunc(dial)}
	if ep.password != "" {
		opts = append(opts, redis.DialUsername(ep.username), redis.DialPassword(ep.password))
	}
	if ep.db != 0 {
		opts = append(opts, redis.DialDatabase(ep.db))
	}
	c, err := redis.DialContext(ctx, "tcp", ep.addr, opts...)
	if err != nil {
		return nil, nil, redactErr(err, ep.password)
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, nc, nil
}

// redactErr guarantees that no error leaving the dialer repeats the password.
func redactErr(err error, password string) error {
	if password == "" || !strings.Contains(err.Error(), password) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), password, "xxxxx"))
}

// poolTransport is the pool-per-call transport: each command borrows a
// connection from the node's Pool for one round trip.
type poolTransport struct {
	pool  Pool
	owned *redis.Pool // closed by close when the Client dialled it
	dial  dialFunc    // owned's dialer; nil for pools given to New
	// doubt is told when the pipelined transport sees a sign that the node
	// may have restarted: a connection failed, the node closed one while
	// idle, or lost a script one had loaded (the Client then re-checks the
	// node for a restart before its next command). Set by the Client, for
	// every pool; err is never a Redis error reply.
	doubt func(error)
	// onConnect checks each connection the owned pool establishes; set by
	// the Client before its first operation, nil for pools given to New.
	onConnect func(ctx context.Context, c redis.Conn) error
	// guarded reports the node's restart guard (ErrNodeGuarded) or nil; a
	// script is sent only on a connection taken after that check passed,
	// since taking one may dial, and the dial's INFO start the guard. Set
	// by the Client, for every pool.
	guarded func() error
}

// check runs guarded, if set.
func (p *poolTransport) check() error {
	if p.guarded == nil {
		return nil
	}
	return p.guarded()
}

// connected runs onConnect, if set, on a new connection of the owned pool.
func (p *poolTransport) connected(ctx context.Context, c redis.Conn) error {
	if p.onConnect == nil {
		return nil
	}
	return p.onConnect(ctx, c)
}

var _ transport = (*poolTransport)(nil)

func (p *poolTransport) do(ctx context.Context, cmd string, args ...interface{}) (interface{}, error) {
	c, err := p.pool.GetContext(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return redis.DoContext(c, ctx, cmd, args...)
}

func (p *poolTransport) eval(ctx context.Context, s *script, keysAndArgs ...interface{}) (interface{}, error) {
	c, err := p.pool.GetContext(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := p.check(); err != nil {
		return nil, err
	}
	return s.DoContext(ctx, c, keysAndArgs...)
}

func (p *poolTransport) conn(ctx context.Context) (redis.Conn, error) {
	return p.pool.GetContext(ctx)
}

func (p *poolTransport) close() error {
	if p.owned == nil {
		return nil
	}
	return p.owned.Close()
}
