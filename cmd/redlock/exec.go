package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/redlockgo/redlock"
)

// Environment variables the child of `redlock exec` receives.
const (
	envKey   = "REDLOCK_KEY"
	envToken = "REDLOCK_TOKEN"
	envFence = "REDLOCK_FENCE" // only with --fencing
)

const execUsage = `usage: redlock exec [flags] KEY -- COMMAND [ARGS...]

Acquires KEY on a quorum of the nodes (waiting up to --wait), runs COMMAND in
a process group of its own while the lock is renewed in the background, then
releases the lock and exits with COMMAND's exit status (128+N if it died of
signal N). The child's environment has REDLOCK_KEY, REDLOCK_TOKEN and, with
--fencing, REDLOCK_FENCE (pass it with every write to the protected resource).

If the lock can no longer be renewed, the child's process group gets SIGTERM
at Until - margin - grace and SIGKILL at Until - margin, so nothing of it runs
past the lock's validity (a process that leaves the group escapes this), and
redlock exits with status 76. If a renewal proves the lock gone, SIGTERM is
sent at once. SIGINT and SIGTERM sent to redlock are forwarded to the child's
group; the lock is released once the child has exited.

exit status:
  COMMAND's   the child ran and exited (128+N: killed by signal N)
  2           usage error: bad flags or arguments, no nodes, unreadable TLS
              files, --margin + --grace above ttl/2
  75          the lock was not obtained within --wait (or the nodes are unreachable)
  76          the lock was lost while the child ran (the child was terminated),
              or the release found it already gone
  126, 127    COMMAND could not be executed / was not found
  1           another error

examples:
  redlock exec --nodes h1:6379,h2:6379,h3:6379 nightly-report -- ./report.sh
  REDLOCK_NODES=h1:6379,h2:6379,h3:6379 redlock exec --ttl 30s --wait 0 backup -- pg_dump -f db.sql db
  redlock exec --fencing ledger -- sh -c 'write-ledger --fence "$REDLOCK_FENCE"'

flags:
`

// execFlags is what `redlock exec` was asked to do.
type execFlags struct {
	nodeFlags
	ttl, wait, margin, grace time.Duration
	fencing, verbose         bool
}

func execCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("exec", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f execFlags
	f.nodeFlags.register(fs)
	fs.DurationVar(&f.ttl, "ttl", 10*time.Second, "lock TTL; the lock is renewed every ttl/3 while COMMAND runs")
	fs.DurationVar(&f.wait, "wait", time.Minute, "how long to wait for the lock (0: one attempt)")
	fs.DurationVar(&f.margin, "margin", 0, "loss margin: the lock counts as lost at Until - margin (default: the library's LossMargin, max(2 x node timeout, ttl/10))")
	fs.DurationVar(&f.grace, "grace", 0, "time between SIGTERM and SIGKILL when the lock is lost (default ttl/10)")
	fs.BoolVar(&f.fencing, "fencing", false, "mint a fencing token, passed as $"+envFence)
	fs.BoolVar(&f.verbose, "verbose", false, "print the library's lock events (votes, renewals, node errors, loss) and the child's supervision to stderr")
	fs.Usage = func() { fmt.Fprint(stderr, execUsage); fs.PrintDefaults() }
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	rest := fs.Args()
	if len(rest) < 3 || rest[1] != "--" {
		fmt.Fprintln(stderr, "redlock exec: want KEY -- COMMAND [ARGS...]")
		fs.Usage()
		return exitUsage
	}
	key, argv := rest[0], rest[2:]
	if f.grace == 0 {
		f.grace = f.ttl / 10
	}
	if f.margin == 0 {
		f.margin = redlock.LossMargin(f.ttl, defaultNodeTimeout(f.ttl))
	}
	switch {
	case key == "":
		fmt.Fprintln(stderr, "redlock exec: KEY must not be empty")
		return exitUsage
	case f.ttl <= 0 || f.wait < 0 || f.grace < 0 || f.margin < 0:
		fmt.Fprintln(stderr, "redlock exec: --ttl must be positive; --wait, --grace and --margin not negative")
		return exitUsage
	case f.margin+f.grace > f.ttl/2:
		// The first renewal is due at ttl/3: SIGTERM earlier than ttl/2
		// would leave it no time to land.
		fmt.Fprintf(stderr, "redlock exec: --margin (%v) + --grace (%v) must not exceed half the --ttl (%v): raise --ttl\n", f.margin, f.grace, f.ttl)
		return exitUsage
	}
	opts := []redlock.Option{redlock.WithLossMargin(f.margin)}
	if f.fencing {
		opts = append(opts, redlock.WithFencing())
	}
	if f.verbose {
		opts = append(opts, redlock.WithObserver(redlock.SlogObserver(verboseLogger(stderr, slog.LevelDebug))))
	}
	c, err := f.client(opts...)
	if err != nil {
		fmt.Fprintln(stderr, "redlock exec:", err)
		return exitUsage
	}
	defer c.Close()
	return runExec(c, key, argv, f, stdout, stderr)
}

// defaultNodeTimeout mirrors the library's default per-node timeout
// (ttl/NodeTimeoutDivisor in [MinNodeTimeout, MaxNodeTimeout], at most
// ttl/2), so that exec knows the loss margin the library applies.
func defaultNodeTimeout(ttl time.Duration) time.Duration {
	d := min(max(ttl/redlock.NodeTimeoutDivisor, redlock.MinNodeTimeout), redlock.MaxNodeTimeout)
	return min(d, ttl/2)
}

// runExec acquires, runs and supervises the child, and releases.
func runExec(c *redlock.Client, key string, argv []string, f execFlags, stdout, stderr io.Writer) int {
	logf := func(format string, args ...any) {
		if f.verbose {
			fmt.Fprintf(stderr, "redlock: %s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
		}
	}
	// Signals are caught from the start, so that an interrupt while waiting
	// for the lock gives up cleanly instead of killing us mid-acquisition.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	waitCtx, waitCancel := context.WithTimeout(ctx, f.wait)
	go func() {
		select {
		case <-sigs:
			waitCancel()
		case <-waitCtx.Done():
		}
	}()
	var (
		l   *redlock.Lock
		err error
	)
	if f.wait == 0 {
		l, err = c.TryLock(ctx, key, f.ttl)
	} else {
		l, err = c.Lock(waitCtx, key, f.ttl)
	}
	waitCancel()
	if err != nil {
		fmt.Fprintf(stderr, "redlock exec: %q not obtained within %v: %v\n", key, f.wait, err)
		return exitNotObtained
	}
	logf("acquired %q fence=%d until=%s", key, l.Fence(), l.Until().Format("15:04:05.000"))
	release := func() error {
		rctx, cancel := context.WithTimeout(context.Background(), f.ttl)
		defer cancel()
		err := l.Unlock(rctx)
		if err != nil {
			logf("release of %q: %v", key, err)
			return err
		}
		logf("released %q", key)
		return nil
	}
	if err := l.KeepAlive(); err != nil {
		release()
		fmt.Fprintln(stderr, "redlock exec:", err)
		return exitUsage
	}

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	cmd.Env = append(os.Environ(), envKey+"="+key, envToken+"="+l.Token())
	if f.fencing {
		cmd.Env = append(cmd.Env, envFence+"="+strconv.FormatUint(l.Fence(), 10))
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		release()
		fmt.Fprintln(stderr, "redlock exec:", err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return exitNotFound
		}
		return exitCannotExec
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	group := func(sig syscall.Signal) { _ = syscall.Kill(-cmd.Process.Pid, sig) }

	// Supervision. The SIGTERM deadline follows Until as renewals move it;
	// once it passes unrenewed (or Done closes: the lock was proved gone or
	// its loss deadline passed), the lock is lost for good.
	until := l.Until()
	term := time.NewTimer(time.Until(until.Add(-f.margin - f.grace)))
	defer term.Stop()
	renewed := func() { // renewals themselves are reported by the library's observer
		if u := l.Until(); u.After(until) {
			until = u
		}
	}
	var (
		lost     error
		kill     <-chan time.Time
		done     = l.Done()
		waitErr  error
		childEnd = false
	)
	loseAt := func(reason error, killAt time.Time) {
		lost = reason
		done = nil
		logf("lost %q: %v; SIGTERM to the child's group, SIGKILL at %s", key, reason, killAt.Format("15:04:05.000"))
		group(syscall.SIGTERM)
		kill = time.After(time.Until(killAt))
	}
	for !childEnd {
		select {
		case waitErr = <-exited:
			childEnd = true
		case sig := <-sigs:
			logf("forwarding %v to the child's group", sig)
			group(sig.(syscall.Signal))
		case <-term.C:
			if lost != nil {
				break
			}
			renewed()
			u := until
			if next := u.Add(-f.margin - f.grace); time.Now().Before(next) {
				term.Reset(time.Until(next))
				break
			}
			loseAt(fmt.Errorf("not renewed in time (valid until %s)", u.Format("15:04:05.000")), u.Add(-f.margin))
		case <-done:
			// Extend on a lost lock returns the loss error without I/O.
			reason := l.Extend(ctx, f.ttl)
			if reason == nil {
				reason = redlock.ErrLockLost
			}
			loseAt(reason, minTime(time.Now().Add(f.grace), l.Until().Add(-f.margin)))
		case <-kill:
			logf("SIGKILL to the child's group")
			group(syscall.SIGKILL)
			kill = nil
		}
	}
	if kill != nil {
		// The child's leader exited on SIGTERM: whatever else is left of its
		// group must not outlive the deadline either.
		group(syscall.SIGKILL)
	}
	if err := release(); lost == nil && errors.Is(err, redlock.ErrLockLost) && !errors.Is(err, redlock.ErrQuorumUnreachable) {
		// The lock ran out unnoticed while the child ran (as Do reports):
		// its last steps may have overlapped another holder.
		lost = err
	}
	if lost != nil {
		fmt.Fprintf(stderr, "redlock exec: lock %q lost while the command ran: %v; the command was terminated\n", key, lost)
		return exitLost
	}
	return exitStatus(waitErr, stderr)
}

// exitStatus turns a child's Wait error into an exit status, as a shell does.
func exitStatus(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	fmt.Fprintln(stderr, "redlock exec:", err)
	return exitFailure
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
