package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/gomodule/redigo/redis"
)

const unlockUsage = `usage: redlock unlock --force --yes [flags] KEY

Administrative release: deletes KEY on every node whoever holds it, and
announces the release so that waiting clients retry at once. The holder is NOT
told: if it is still running it believes it holds the lock while another
client may acquire it. Use it only for a holder known to be dead whose TTL is
too long to wait out. The fencing counter is kept, so tokens keep increasing.

--force and --yes are both required; without them the command refuses (exit 2).
Exits 1 if a node could not be reached.

examples:
  redlock unlock --force --yes --nodes h1:6379,h2:6379,h3:6379 nightly-backup

flags:
`

// forceRelease deletes the key whatever its token and publishes the release
// on the channel waiters of the library subscribe to (wake.go's
// releaseChannel: "redlock:released:" + key). Reply: 1 if a key was deleted.
var forceRelease = redis.NewScript(1, `
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
redis.call('DEL', KEYS[1])
redis.pcall('PUBLISH', ARGV[1], v)
return 1`)

func unlockCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("unlock", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var nf nodeFlags
	nf.register(fs)
	force := fs.Bool("force", false, "release whoever holds the key (required: there is no other mode)")
	yes := fs.Bool("yes", false, "confirm the administrative release (required)")
	timeout := fs.Duration("timeout", 2*time.Second, "per-node connect and read timeout")
	fs.Usage = func() { fmt.Fprint(stderr, unlockUsage); fs.PrintDefaults() }
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	switch {
	case fs.NArg() != 1 || fs.Arg(0) == "":
		fmt.Fprintln(stderr, "redlock unlock: want exactly one KEY")
		return exitUsage
	case !*force || !*yes:
		fmt.Fprintln(stderr, "redlock unlock: refusing without --force --yes: this releases the key whoever holds it, and the holder is not told")
		return exitUsage
	case *timeout <= 0:
		fmt.Fprintln(stderr, "redlock unlock: --timeout must be positive")
		return exitUsage
	}
	nodes, err := nf.dialRaw(context.Background(), *timeout)
	if err != nil {
		fmt.Fprintln(stderr, "redlock unlock:", err)
		return exitUsage
	}
	defer closeRaw(nodes)
	name := nf.prefix + fs.Arg(0)
	failed, deleted := 0, 0
	for _, n := range nodes {
		err := n.err
		var d int
		if err == nil {
			d, err = redis.Int(forceRelease.Do(n.conn, name, "redlock:released:"+name))
		}
		switch {
		case err != nil:
			failed++
			fmt.Fprintf(stdout, "%s\terror: %v\n", n.url, err)
		case d == 1:
			deleted++
			fmt.Fprintf(stdout, "%s\treleased\n", n.url)
		default:
			fmt.Fprintf(stdout, "%s\tnot held\n", n.url)
		}
	}
	fmt.Fprintf(stdout, "released on %d of %d nodes\n", deleted, len(nodes))
	if failed > 0 {
		fmt.Fprintf(stderr, "redlock unlock: %d of %d nodes could not be reached; the key may still be held there until its TTL\n", failed, len(nodes))
		return exitFailure
	}
	return exitOK
}
