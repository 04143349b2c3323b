package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redlockgo/redlock"
	"github.com/redlockgo/redlock/internal/redistest"
)

// cliEnv is the environment the binary runs with: the test's, without a
// REDLOCK_NODES that would pick nodes for it.
func cliEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, nodesEnv+"=") {
			env = append(env, e)
		}
	}
	return env
}

// cli prepares the binary with args.
func cli(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(buildBinary(t), args...)
	cmd.Env = cliEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return cmd, &stdout, &stderr
}

// runCLI runs the binary to completion and returns its exit status.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd, stdout, stderr := cli(t, args...)
	require.NoError(t, cmd.Start())
	return waitCode(t, cmd), stdout.String(), stderr.String()
}

func waitCode(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	require.NoError(t, err)
	return 0
}

func nodesFlag(servers []*redistest.Server) string {
	return "--nodes=" + strings.Join(redistest.Addrs(servers), ",")
}

// waitFile waits for path to exist and returns its content.
func waitFile(t *testing.T, path string) string {
	t.Helper()
	var b []byte
	require.Eventually(t, func() bool {
		var err error
		b, err = os.ReadFile(path)
		return err == nil && len(b) > 0
	}, 30*time.Second, 10*time.Millisecond, "waiting for %s", path)
	return strings.TrimSpace(string(b))
}

func readNanos(t *testing.T, path string) time.Time {
	t.Helper()
	ns, err := strconv.ParseInt(waitFile(t, path), 10, 64)
	require.NoError(t, err)
	return time.Unix(0, ns)
}

func heldOn(t *testing.T, servers []*redistest.Server, key string) []string {
	t.Helper()
	var vals []string
	for _, s := range servers {
		v, err := redis.String(s.Do("GET", key))
		if err == redis.ErrNil {
			v, err = "", nil
		}
		require.NoError(t, err)
		vals = append(vals, v)
	}
	return vals
}

func TestExecExitCodePassthrough(t *testing.T) {
	servers := redistest.Start(t, 3)
	for _, c := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 7", 7},
		{"exit 1", 1},
		{"kill -9 $$", 128 + 9}, // as a shell reports a signal death
	} {
		code, _, stderr := runCLI(t, "exec", nodesFlag(servers), "--ttl=2s", "k", "--", "sh", "-c", c.script)
		assert.Equal(t, c.want, code, "%s: %s", c.script, stderr)
	}
	code, _, stderr := runCLI(t, "exec", nodesFlag(servers), "k", "--", "/nonexistent/command")
	assert.Equal(t, exitNotFound, code, stderr)
	assert.Equal(t, []string{"", "", ""}, heldOn(t, servers, "k"), "released after every run")
}

// The child sees its lock in the environment, and the nodes hold that token
// while it runs.
func TestExecChildEnvironment(t *testing.T) {
	servers := redistest.Start(t, 3)
	dir := t.TempDir()
	env, gate := filepath.Join(dir, "env"), filepath.Join(dir, "go")
	cmd, _, stderr := cli(t, "exec", nodesFlag(servers), "--fencing", "--ttl=2s", "job/1", "--",
		"sh", "-c", `echo "$REDLOCK_KEY|$REDLOCK_TOKEN|$REDLOCK_FENCE" > "$0"; while [ ! -e "$1" ]; do sleep 0.02; done`, env, gate)
	require.NoError(t, cmd.Start())
	parts := strings.Split(waitFile(t, env), "|")
	require.Len(t, parts, 3)
	assert.Equal(t, "job/1", parts[0])
	assert.NotEmpty(t, parts[1])
	fence, err := strconv.ParseUint(parts[2], 10, 64)
	require.NoError(t, err, "REDLOCK_FENCE is a number with --fencing")
	assert.NotZero(t, fence)
	assert.Equal(t, []string{parts[1], parts[1], parts[1]}, heldOn(t, servers, "job/1"), "the token the child sees is the one on the nodes")
	require.NoError(t, os.WriteFile(gate, nil, 0o600))
	assert.Equal(t, 0, waitCode(t, cmd), stderr.String())

	// Without --fencing there is no REDLOCK_FENCE.
	code, stdout, stderr2 := runCLI(t, "exec", nodesFlag(servers), "k", "--", "sh", "-c", `echo "[${REDLOCK_FENCE-unset}]"`)
	require.Equal(t, 0, code, stderr2)
	assert.Equal(t, "[unset]", strings.TrimSpace(stdout))
}

// A second exec waits for the first child to finish, even when the child
// runs longer than the TTL (renewal keeps the lock); --wait 0 gives up at once.
func TestExecHoldsLockWhileChildRuns(t *testing.T) {
	servers := redistest.Start(t, 3)
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	first, _, stderr1 := cli(t, "exec", nodesFlag(servers), "--ttl=1500ms", "shared", "--",
		"sh", "-c", `date +%s%N > "$0.tmp" && mv "$0.tmp" "$0"; sleep 2.5; date +%s%N > "$1.tmp" && mv "$1.tmp" "$1"`, p("1start"), p("1end"))
	require.NoError(t, first.Start())
	waitFile(t, p("1start"))

	code, _, stderr := runCLI(t, "exec", nodesFlag(servers), "--wait=0", "shared", "--", "true")
	assert.Equal(t, exitNotObtained, code, stderr)
	assert.Contains(t, stderr, "not obtained")

	code, _, stderr = runCLI(t, "exec", nodesFlag(servers), "--ttl=1500ms", "--wait=60s", "shared", "--",
		"sh", "-c", `date +%s%N > "$0"`, p("2start"))
	require.Equal(t, 0, code, stderr)
	require.Equal(t, 0, waitCode(t, first), stderr1.String())
	assert.False(t, readNanos(t, p("2start")).Before(readNanos(t, p("1end"))), "the second child started only after the first ended")
}

func TestExecNotObtainedWhenNodesUnreachable(t *testing.T) {
	code, _, stderr := runCLI(t, "exec", "--nodes=127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", "--wait=0", "k", "--", "true")
	assert.Equal(t, exitNotObtained, code, stderr)
}

// Killing a majority of nodes makes renewal impossible: the child's group
// gets SIGTERM, then SIGKILL a grace later, before the lock's validity ends.
func TestExecChildSignalledOnLoss(t *testing.T) {
	servers := redistest.Start(t, 5)
	dir := t.TempDir()
	pidFile, termFile := filepath.Join(dir, "pid"), filepath.Join(dir, "term")
	const ttl, grace = 2 * time.Second, 500 * time.Millisecond
	cmd, _, stderr := cli(t, "exec", nodesFlag(servers), "--ttl="+ttl.String(), "--grace="+grace.String(), "--verbose", "k", "--",
		"sh", "-c", `trap 'date +%s%N >> "$1"' TERM; echo $$ > "$0"; while :; do sleep 0.05; done`, pidFile, termFile)
	require.NoError(t, cmd.Start())
	pid, err := strconv.Atoi(waitFile(t, pidFile))
	require.NoError(t, err)
	time.Sleep(ttl / 2) // at least one renewal happens

	killed := time.Now()
	for _, s := range servers[:3] {
		s.Kill()
	}
	code := waitCode(t, cmd)
	exited := time.Now()
	assert.Equal(t, exitLost, code, stderr.String())
	assert.Contains(t, stderr.String(), "lost")
	// --verbose prints the library's events: renewals while the nodes were
	// up, and failed nodes once they were killed.
	assert.Contains(t, stderr.String(), "level=DEBUG", "renewals are logged")
	assert.Contains(t, stderr.String(), "level=WARN", "the loss and the failed nodes are logged")
	term := readNanos(t, termFile)
	assert.Greater(t, exited.Sub(term), grace/5, "SIGKILL comes a grace after SIGTERM, which the child trapped")
	// The last renewal started before the kill, so validity ends by
	// killed+ttl; SIGKILL is due a margin before that. 1s covers scheduling.
	assert.Less(t, exited.Sub(killed), ttl+time.Second, "the child must not outlive the lock's validity")
	assert.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "the child is gone")
	t.Log(stderr.String())
}

// SIGTERM to redlock reaches the child; the lock is released after it exits
// and redlock exits with the child's status.
func TestExecForwardsSignals(t *testing.T) {
	servers := redistest.Start(t, 3)
	dir := t.TempDir()
	pidFile, sigFile := filepath.Join(dir, "pid"), filepath.Join(dir, "sig")
	cmd, _, stderr := cli(t, "exec", nodesFlag(servers), "--ttl=10s", "k", "--",
		"sh", "-c", `trap 'echo got > "$1"; exit 3' TERM; echo $$ > "$0"; while :; do sleep 0.05; done`, pidFile, sigFile)
	require.NoError(t, cmd.Start())
	waitFile(t, pidFile)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 3, waitCode(t, cmd), stderr.String())
	assert.Equal(t, "got", waitFile(t, sigFile))
	assert.Equal(t, []string{"", "", ""}, heldOn(t, servers, "k"), "released, not left to expire")
}

func TestCLIUsageErrors(t *testing.T) {
	nodes := "--nodes=127.0.0.1:1,127.0.0.1:2,127.0.0.1:3"
	for _, args := range [][]string{
		{},
		{"bogus"},
		{"exec", nodes, "k"},         // no -- COMMAND
		{"exec", nodes, "k", "true"}, // missing --
		{"exec", nodes, "k", "--"},   // no command
		{"exec", "k", "--", "true"},  // no nodes at all
		{"exec", "--nodes=ftp://h:1", "k", "--", "true"},
		{"exec", nodes, "--ttl=1s", "--grace=1s", "k", "--", "true"},
		{"exec", nodes, "--bogus", "k", "--", "true"},
		{"exec", nodes, "--tls-cert=/nonexistent", "k", "--", "true"},
		{"status", nodes},
		{"status", nodes, "a", "b"},
		{"unlock", nodes, "k"},
		{"unlock", nodes, "--force", "k"},
		{"unlock", nodes, "--yes", "k"},
		{"bench", "--workers=0"},
		{"demo", "--timeline"},
	} {
		code, stdout, stderr := runCLI(t, args...)
		assert.Equal(t, exitUsage, code, "%v: %s", args, stderr)
		assert.NotEmpty(t, stderr, "%v: errors go to stderr", args)
		assert.Empty(t, stdout, "%v", args)
	}
	for _, args := range [][]string{{"exec", "-h"}, {"help", "exec"}, {"status", "-h"}, {"unlock", "-h"}, {"bench", "-h"}, {"help"}} {
		code, stdout, stderr := runCLI(t, args...)
		assert.Equal(t, exitOK, code, "%v", args)
		assert.Contains(t, stdout+stderr, "example", "%v: usage with examples", args)
	}
}

// status shows the holder and the fencing counter on every node; unlock
// --force --yes removes the key everywhere and keeps the counter.
func TestStatusAndForceUnlock(t *testing.T) {
	servers := redistest.Start(t, 3)
	c, err := redlock.Dial(redistest.Addrs(servers), redlock.WithFencing())
	require.NoError(t, err)
	defer c.Close()
	l, err := c.TryLock(context.Background(), "res", time.Minute)
	require.NoError(t, err)
	fence := strconv.FormatUint(l.Fence(), 10)

	code, stdout, stderr := runCLI(t, "status", nodesFlag(servers), "res")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "held on 3 of 3 nodes")
	assert.Equal(t, 3, strings.Count(stdout, l.Token()), stdout)
	// The token was written back to a quorum; other nodes' counters may
	// differ (seeded from their clocks at acquisition).
	assert.GreaterOrEqual(t, strings.Count(stdout, fence), 2, stdout)

	code, _, _ = runCLI(t, "unlock", nodesFlag(servers), "--force", "res")
	require.Equal(t, exitUsage, code)
	assert.Equal(t, []string{l.Token(), l.Token(), l.Token()}, heldOn(t, servers, "res"), "refused without --yes")

	code, stdout, stderr = runCLI(t, "unlock", nodesFlag(servers), "--force", "--yes", "res")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "released on 3 of 3 nodes")
	assert.Equal(t, []string{"", "", ""}, heldOn(t, servers, "res"))

	code, stdout, _ = runCLI(t, "status", nodesFlag(servers), "res")
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, "held on 0 of 3 nodes")
	assert.GreaterOrEqual(t, strings.Count(stdout, fence), 2, "the fencing counter survives: %s", stdout)
	l2, err := c.TryLock(context.Background(), "res", time.Minute)
	require.NoError(t, err, "the key is free again")
	assert.Greater(t, l2.Fence(), l.Fence())
	require.NoError(t, l2.Unlock(context.Background()))

	// A node down is reported, and makes unlock fail.
	servers[2].Kill()
	code, stdout, _ = runCLI(t, "status", nodesFlag(servers), "res")
	assert.Equal(t, 0, code)
	assert.Contains(t, stdout, "error")
	code, _, _ = runCLI(t, "unlock", nodesFlag(servers), "--force", "--yes", "res")
	assert.Equal(t, exitFailure, code)
}

func TestBench(t *testing.T) {
	servers := redistest.Start(t, 3)
	cfg := benchConfig{workers: 4, keys: 1, clients: 2, duration: 500 * time.Millisecond, ttl: 10 * time.Second}
	cfg.nodes = strings.Join(redistest.Addrs(servers), ",")
	var clients []*redlock.Client
	for range cfg.clients {
		c, err := cfg.client()
		require.NoError(t, err)
		defer c.Close()
		clients = append(clients, c)
	}
	r := runBench(context.Background(), cfg, clients)
	assert.Greater(t, len(r.release), 10, "a hot key still changes hands")
	assert.Zero(t, r.failed)
	// When the run ends, one worker at most holds the key: the others'
	// waits are cut short, and count at their length so far.
	assert.Positive(t, r.unfinished, "waits cut short by the end of the run")
	assert.Len(t, r.acquire, len(r.release)+r.unfinished, "a wait per cycle and per unfinished wait")
	// Close waits for the releases a waiter's cancelled last attempt left in
	// flight; only then must every key be gone.
	for _, c := range clients {
		require.NoError(t, c.Close())
	}
	assert.Equal(t, []string{"", "", ""}, heldOn(t, servers, "redlock-bench:0"), "every lock released")

	code, stdout, stderr := runCLI(t, "bench", "--embedded=miniredis", "--duration=300ms", "--workers=2", "--keys=10")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "locks/s")
	assert.Contains(t, stdout, "acquire  p50")
	assert.Contains(t, stdout, "unfinished at the end")
}

// The TLS flags reach both the library (exec) and the plain connections
// (status, unlock), with mutual TLS.
func TestCLIOverMutualTLS(t *testing.T) {
	certs := redistest.NewCerts(t)
	servers := redistest.StartTLS(t, 3, certs.ServerTLS(true))
	var urls []string
	for _, s := range servers {
		urls = append(urls, "rediss://"+s.Addr)
	}
	tlsFlags := []string{"--nodes=" + strings.Join(urls, ","), "--tls-ca=" + certs.CAFile, "--tls-cert=" + certs.ClientCert, "--tls-key=" + certs.ClientKey}
	with := func(args ...string) []string { return append(append([]string{args[0]}, tlsFlags...), args[1:]...) }

	code, stdout, stderr := runCLI(t, with("exec", "--fencing", "tk", "--", "sh", "-c", `echo "$REDLOCK_FENCE"`)...)
	require.Equal(t, 0, code, stderr)
	assert.NotEqual(t, "", strings.TrimSpace(stdout))

	code, stdout, stderr = runCLI(t, with("status", "tk")...)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "held on 0 of 3 nodes (quorum 2), 3 answered")
	assert.Equal(t, 3, strings.Count(stdout, "rediss://127.0.0.1:"), stdout)

	code, _, stderr = runCLI(t, with("unlock", "--force", "--yes", "tk")...)
	require.Equal(t, 0, code, stderr)

	// Without the client certificate the servers refuse: exec cannot obtain.
	code, _, _ = runCLI(t, "exec", "--wait=0", "--nodes="+strings.Join(urls, ","), "--tls-ca="+certs.CAFile, "tk", "--", "true")
	assert.Equal(t, exitNotObtained, code)
}

// A lock that vanished unnoticed while the child ran (here: deleted behind
// its back, before the first renewal) is reported at release as lost.
func TestExecReportsLossFoundAtRelease(t *testing.T) {
	servers := redistest.Start(t, 3)
	gate := filepath.Join(t.TempDir(), "go")
	cmd, _, stderr := cli(t, "exec", nodesFlag(servers), "--ttl=30s", "k", "--",
		"sh", "-c", `while [ ! -e "$0" ]; do sleep 0.02; done`, gate)
	require.NoError(t, cmd.Start())
	// Every node, also one still in first contact when Lock returned: it
	// goes on after exec ends the wait's context, and its acquire must not
	// land after the deletion below.
	require.Eventually(t, func() bool {
		n := 0
		for _, v := range heldOn(t, servers, "k") {
			if v != "" {
				n++
			}
		}
		return n == len(servers)
	}, 30*time.Second, 10*time.Millisecond)
	for _, s := range servers {
		_, err := s.Do("DEL", "k")
		require.NoError(t, err)
	}
	require.NoError(t, os.WriteFile(gate, nil, 0o600))
	assert.Equal(t, exitLost, waitCode(t, cmd), stderr.String())
	assert.Contains(t, stderr.String(), "lost")
}
