package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/redlockgo/redlock"
)

// nodesEnv names the environment variable read when --nodes is not given.
const nodesEnv = "REDLOCK_NODES"

// nodeFlags are the flags shared by the commands that talk to given nodes:
// where the nodes are and how to reach them.
type nodeFlags struct {
	nodes      string
	prefix     string
	tlsCA      string
	tlsCert    string
	tlsKey     string
	serverName string
}

func (f *nodeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.nodes, "nodes", "", "comma-separated node URLs: host:port, redis://[user:pass@]host:port[/db] or rediss://... (default $"+nodesEnv+")")
	fs.StringVar(&f.prefix, "key-prefix", "", "prefix prepended to the key on the nodes (the library's WithKeyPrefix)")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "PEM file of CA certificates that verify the nodes (TLS for every node)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM client certificate for mutual TLS (with --tls-key)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&f.serverName, "tls-server-name", "", "name to verify in the nodes' certificates (default: the host of each URL)")
}

// urls returns the node URLs from --nodes, else from $REDLOCK_NODES.
func (f *nodeFlags) urls() ([]string, error) {
	s := f.nodes
	if s == "" {
		s = os.Getenv(nodesEnv)
	}
	var urls []string
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	if len(urls) == 0 {
		return nil, fmt.Errorf("no nodes: give --nodes URL,URL,... or set $%s", nodesEnv)
	}
	return urls, nil
}

// tlsConfig returns the TLS configuration the flags ask for, or nil when no
// TLS flag was given (rediss:// URLs then use the system's roots).
func (f *nodeFlags) tlsConfig() (*tls.Config, error) {
	if f.tlsCA == "" && f.tlsCert == "" && f.tlsKey == "" && f.serverName == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.serverName}
	if f.tlsCA != "" {
		pem, err := os.ReadFile(f.tlsCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca: no PEM certificate in %s", f.tlsCA)
		}
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if f.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// client dials a redlock Client over the flags' nodes with extra options.
func (f *nodeFlags) client(opts ...redlock.Option) (*redlock.Client, error) {
	urls, err := f.urls()
	if err != nil {
		return nil, err
	}
	tc, err := f.tlsConfig()
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, redlock.WithTLSConfig(tc))
	}
	if f.prefix != "" {
		opts = append(opts, redlock.WithKeyPrefix(f.prefix))
	}
	// The CLI is interactive: an eviction-prone node is worth a line on
	// stderr, not a structured log record.
	opts = append(opts, redlock.WithEvictionWarning(func(addr, policy string) {
		fmt.Fprintf(os.Stderr, "redlock: warning: node %s has maxmemory-policy %s, which can evict lock keys; set noeviction\n", addr, policy)
	}))
	return redlock.Dial(urls, opts...)
}

// rawNode is a plain connection to one node, for read-only inspection and
// administrative commands that bypass the algorithm.
type rawNode struct {
	url  string // as given, for messages (credentials removed)
	conn redis.Conn
	err  error // the dial error, if the node could not be reached
}

// dialRaw opens one plain connection per node. A node that cannot be reached
// is returned with its error rather than failing the whole command.
func (f *nodeFlags) dialRaw(ctx context.Context, timeout time.Duration) ([]rawNode, error) {
	urls, err := f.urls()
	if err != nil {
		return nil, err
	}
	tc, err := f.tlsConfig()
	if err != nil {
		return nil, err
	}
	nodes := make([]rawNode, len(urls))
	for i, raw := range urls {
		u := raw
		if !strings.Contains(u, "://") {
			if tc != nil {
				u = "rediss://" + u
			} else {
				u = "redis://" + u
			}
		}
		if _, err := url.Parse(u); err != nil {
			// url's errors quote the URL, password included.
			return nil, fmt.Errorf("node URL %d of --nodes is malformed", i+1)
		}
		nodes[i].url = redact(u)
		opts := []redis.DialOption{
			redis.DialConnectTimeout(timeout), redis.DialReadTimeout(timeout), redis.DialWriteTimeout(timeout),
		}
		if tc != nil {
			opts = append(opts, redis.DialTLSConfig(tc))
		}
		dctx, cancel := context.WithTimeout(ctx, timeout)
		nodes[i].conn, nodes[i].err = redis.DialURLContext(dctx, u, opts...)
		cancel()
	}
	return nodes, nil
}

func closeRaw(nodes []rawNode) {
	for _, n := range nodes {
		if n.conn != nil {
			n.conn.Close()
		}
	}
}

// redact removes the password from a node URL.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	u.User = url.User("xxxxx")
	return u.String()
}

// parseFlags parses args into fs. When parsing ends the command, ok is false
// and code is its exit status: 0 for -h (usage was printed), exitUsage for
// bad flags.
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return exitOK, true
	case errors.Is(err, flag.ErrHelp):
		return exitOK, false
	}
	return exitUsage, false
}

// verboseLogger writes the library's events (redlock.SlogObserver) to w as
// text lines, from level on.
func verboseLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
