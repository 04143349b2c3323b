package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/redlockgo/redlock"
)

const statusUsage = `usage: redlock status [flags] KEY

Shows, for every node, whether KEY is held (and by which token), its remaining
TTL, and the key's fencing counter (KEY` + redlock.FenceKeySuffix + `) with its remaining lifetime.
It only reads, over plain connections: it takes no lock and changes nothing.
Exits 1 if no node could be read.

examples:
  redlock status --nodes h1:6379,h2:6379,h3:6379 nightly-backup
  REDLOCK_NODES=rediss://h1:6380,rediss://h2:6380,rediss://h3:6380 redlock status --tls-ca ca.pem ledger

flags:
`

func statusCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var nf nodeFlags
	nf.register(fs)
	timeout := fs.Duration("timeout", 2*time.Second, "per-node connect and read timeout")
	fs.Usage = func() { fmt.Fprint(stderr, statusUsage); fs.PrintDefaults() }
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 || fs.Arg(0) == "" || *timeout <= 0 {
		fmt.Fprintln(stderr, "redlock status: want exactly one KEY (and a positive --timeout)")
		return exitUsage
	}
	nodes, err := nf.dialRaw(context.Background(), *timeout)
	if err != nil {
		fmt.Fprintln(stderr, "redlock status:", err)
		return exitUsage
	}
	defer closeRaw(nodes)
	name := nf.prefix + fs.Arg(0)
	tw := tabwriter.NewWriter(stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tHELD\tTTL\tTOKEN\tFENCE\tFENCE TTL")
	held, read := 0, 0
	for _, n := range nodes {
		s, err := readStatus(n, name)
		if err != nil {
			fmt.Fprintf(tw, "%s\terror: %v\t\t\t\t\n", n.url, err)
			continue
		}
		read++
		if s.held {
			held++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.url, yesNo(s.held), ttlString(s.ttl), orDash(s.token), orDash(s.fence), ttlString(s.fenceTTL))
	}
	tw.Flush()
	fmt.Fprintf(stdout, "held on %d of %d nodes (quorum %d), %d answered\n", held, len(nodes), len(nodes)/2+1, read)
	if read == 0 {
		fmt.Fprintln(stderr, "redlock status: no node could be read")
		return exitFailure
	}
	return exitOK
}

// keyStatus is what one node holds for a key.
type keyStatus struct {
	held          bool
	token, fence  string
	ttl, fenceTTL time.Duration // negative: no expiry or absent
}

func readStatus(n rawNode, name string) (keyStatus, error) {
	var s keyStatus
	if n.err != nil {
		return s, n.err
	}
	tok, err := redis.String(n.conn.Do("GET", name))
	switch {
	case err == redis.ErrNil:
	case err != nil:
		return s, err
	default:
		s.held, s.token = true, tok
	}
	if s.ttl, err = pttl(n.conn, name); err != nil {
		return s, err
	}
	fence := name + redlock.FenceKeySuffix
	if s.fence, err = redis.String(n.conn.Do("GET", fence)); err != nil && err != redis.ErrNil {
		return s, err
	}
	if s.fenceTTL, err = pttl(n.conn, fence); err != nil {
		return s, err
	}
	return s, nil
}

func pttl(c redis.Conn, key string) (time.Duration, error) {
	ms, err := redis.Int64(c.Do("PTTL", key))
	if err != nil {
		return 0, err
	}
	if ms < 0 {
		return time.Duration(ms), nil // -1 no expiry, -2 absent
	}
	return time.Duration(ms) * time.Millisecond, nil
}

func ttlString(d time.Duration) string {
	switch {
	case d == -1:
		return "no expiry"
	case d < 0:
		return "-"
	}
	return d.String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
