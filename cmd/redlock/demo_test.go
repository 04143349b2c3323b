package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func testDemo(t *testing.T, kind string) {
	cfg := demoConfig{nodes: 5, workers: 4, clients: 2, ttl: 300 * time.Millisecond, duration: 2 * time.Second, kind: kind, key: "k"}
	var out bytes.Buffer
	s, err := runDemo(context.Background(), cfg, &out)
	require.NoError(t, err)
	t.Log(out.String())
	// Liveness, not speed: 100-154 grants on a quiet machine, 15 once in CI
	// beside the library's race-enabled chaos tests; a demo that stalls
	// while nodes crash makes a few at most.
	assert.Greater(t, s.grants, int64(8), "workers must keep acquiring while nodes crash")
	assert.Greater(t, s.handoffs, int64(1))
	assert.Zero(t, s.lostUpdates())
	assert.Zero(t, s.overlaps)
	assert.Zero(t, s.overruns)
	assert.Zero(t, s.fenceRegressions, "fencing tokens must increase from grant to grant")
	assert.Greater(t, s.fenceLast, s.fenceFirst)
	assert.Len(t, s.holds, int(s.grants), "one hold interval per grant")
	assert.Len(t, s.nodeEvents, 4)
	require.Len(t, s.events, 4, "two crashes and two delayed restarts")
	assert.Contains(t, s.events[0], "crashed")
	assert.Contains(t, s.events[1], "restarted empty")
}

func TestDemoOnMiniredis(t *testing.T)   { testDemo(t, kindMiniredis) }
func TestDemoOnRedisServer(t *testing.T) { testDemo(t, kindRedisServer) }

// miniredis only expires keys when its clock is driven: the demo drives it in
// real time, so a PX key must vanish on time, and a restart must be empty.
func TestMiniNodeExpiresInRealTime(t *testing.T) {
	n, err := newMiniNode("127.0.0.1:0")
	require.NoError(t, err)
	defer n.Close()
	c, err := redis.Dial("tcp", n.Addr())
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Do("SET", "k", "v", "PX", 300)
	require.NoError(t, err)
	time.Sleep(100 * time.Millisecond)
	n1, err := redis.Int(c.Do("EXISTS", "k"))
	require.NoError(t, err)
	assert.Equal(t, 1, n1, "not expired early")
	assert.Eventually(t, func() bool {
		n, err := redis.Int(c.Do("EXISTS", "k"))
		return err == nil && n == 0
	}, 2*time.Second, 5*time.Millisecond, "expired in real time")

	_, err = c.Do("SET", "k2", "v")
	require.NoError(t, err)
	addr := n.Addr()
	require.NoError(t, n.Restart())
	assert.Equal(t, addr, n.Addr(), "restarts on the same address")
	c2, err := redis.Dial("tcp", n.Addr())
	require.NoError(t, err)
	defer c2.Close()
	n2, err := redis.Int(c2.Do("EXISTS", "k2"))
	require.NoError(t, err)
	assert.Zero(t, n2, "a crash loses the data")
}

// buildBinary builds the command once per test binary (in a directory
// removed by TestMain) and returns its path.
func buildBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binPath = filepath.Join(binDir, "redlock")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	require.NoError(t, binErr)
	return binPath
}

var (
	binDir  string
	binOnce sync.Once
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	var err error
	if binDir, err = os.MkdirTemp("", "redlock-cli-test"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// The README's first command must work on a machine with Go only.
func TestDemoBinaryWithoutRedisServer(t *testing.T) {
	bin := buildBinary(t)
	cmd := exec.Command(bin, "demo", "--duration", "1500ms", "--ttl", "300ms")
	cmd.Env = append(os.Environ(), "PATH="+t.TempDir()) // nothing on PATH
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "in-process miniredis")
	assert.Contains(t, string(out), "lost updates    0")
	assert.Contains(t, string(out), "fencing tokens  monotonic")
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"nosuchcommand"},
		{"demo", "--nodes", "0"},
		{"demo", "--ttl", "1ms"},
		{"demo", "--bogus"},
		{"demo", "extra"},
		{"demo", "--embedded", "etcd", "--duration", "10ms"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(args, &stdout, &stderr)
		assert.NotEqual(t, exitOK, code, "%v", args)
		assert.NotEmpty(t, stderr.String(), "%v: errors go to stderr", args)
	}
	var stdout, stderr bytes.Buffer
	assert.Equal(t, exitOK, run([]string{"help"}, &stdout, &stderr))
	assert.True(t, strings.Contains(stdout.String(), "demo"))
}
