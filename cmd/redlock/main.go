// Command redlock runs commands under a Redlock lock, demonstrates the
// algorithm on embedded nodes, benchmarks locks and inspects or releases
// keys on the nodes. See docs/cli.md.
//
// Usage:
//
//	redlock exec [flags] KEY -- COMMAND [ARGS...]
//	redlock demo [flags]
//	redlock bench [flags]
//	redlock status [flags] KEY
//	redlock unlock --force --yes [flags] KEY
//	redlock help
package main

import (
	"fmt"
	"io"
	"os"
)

// Exit codes of redlock itself. exec otherwise exits with its child's status;
// 75 and 76 (sysexits' EX_TEMPFAIL and EX_PROTOCOL) are rarely used by
// programs, unlike 1, 2, 126, 127 and 128+N.
const (
	exitOK          = 0
	exitFailure     = 1  // the command ran and failed (e.g. a safety check)
	exitUsage       = 2  // bad flags or arguments
	exitNotObtained = 75 // exec: the lock was not obtained within --wait
	exitLost        = 76 // exec: the lock was lost while the child ran
	exitCannotExec  = 126
	exitNotFound    = 127
)

const usage = `usage: redlock <command> [flags]

commands:
  exec     run a command while holding a lock:  redlock exec KEY -- COMMAND [ARGS...]
  demo     run contending workers on 5 embedded Redis nodes while nodes crash
  bench    measure acquire/release throughput and latency
  status   show, per node, whether a key is held, its TTL and fencing counter
  unlock   release a key on every node, whoever holds it (--force --yes)
  help     print this help

Nodes are given with --nodes URL,URL,... or $REDLOCK_NODES; a URL is host:port,
redis://[user:pass@]host:port[/db] or rediss://... (TLS).

exit status: 0 success, 1 failure, 2 usage error; exec: the command's status,
75 lock not obtained, 76 lock lost while the command ran.

examples:
  go run ./cmd/redlock demo --timeline demo.svg
  export REDLOCK_NODES=10.0.0.1:6379,10.0.0.2:6379,10.0.0.3:6379
  redlock exec --ttl 30s --wait 5m nightly-backup -- ./backup.sh
  redlock status nightly-backup
  redlock bench --workers 16 --duration 10s --keys 1000

Run "redlock <command> -h" for a command's flags. See docs/cli.md.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "exec":
		return execCommand(args[1:], stdout, stderr)
	case "demo":
		return demoCommand(args[1:], stdout, stderr)
	case "bench":
		return benchCommand(args[1:], stdout, stderr)
	case "status":
		return statusCommand(args[1:], stdout, stderr)
	case "unlock":
		return unlockCommand(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		if len(args) > 1 && args[1] != "help" {
			return run([]string{args[1], "-h"}, stderr, stdout)
		}
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "redlock: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}
