package redlock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redlockgo/redlock/internal/redistest"
)

// This file puts real servers into states that refuse our scripts and checks
// that each gives a clear per-node error, loses nothing and never a false
// "held".

func do(t *testing.T, s *redistest.Server, cmd string, args ...interface{}) interface{} {
	t.Helper()
	v, err := s.Do(cmd, args...)
	require.NoError(t, err, "%s on %s", cmd, s.Addr)
	return v
}

func TestWrongTypeKey(t *testing.T) {
	servers, c := cluster(t, 3)
	ctx := context.Background()
	for _, s := range servers {
		do(t, s, "RPUSH", "k", "data")
	}
	_, err := c.TryLock(ctx, "k", 10*time.Second)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrQuorumUnreachable)
	assert.Contains(t, err.Error(), "WRONGTYPE")
	for _, s := range servers {
		v, err := redis.Strings(s.Do("LRANGE", "k", 0, -1))
		require.NoError(t, err)
		assert.Equal(t, []string{"data"}, v, "the list is untouched")
	}

	// One node with a list: the other two still form a quorum, and the
	// list survives the lock's life.
	do(t, servers[1], "DEL", "k")
	do(t, servers[2], "DEL", "k")
	l, err := c.TryLock(ctx, "k", 10*time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Extend(ctx, 10*time.Second))
	require.NoError(t, l.Unlock(ctx))
	v, err := redis.Strings(servers[0].Do("LRANGE", "k", 0, -1))
	require.NoError(t, err)
	assert.Equal(t, []string{"data"}, v)
}

// TestScriptFlush: the script cache flushed between calls (SCRIPT FLUSH, a
// restart) makes EVALSHA fail with NOSCRIPT; redigo's Script falls back to
// EVAL, and each operation succeeds.
func TestScriptFlush(t *testing.T) {
	servers, c := cluster(t, 3)
	ctx := context.Background()
	flush := func() {
		for _, s := range servers {
			do(t, s, "SCRIPT", "FLUSH")
		}
	}
	flush()
	l, err := c.TryLock(ctx, "k", 10*time.Second)
	require.NoError(t, err)
	flush()
	require.NoError(t, l.Extend(ctx, 20*time.Second))
	flush()
	_, err = c.TryLock(ctx, "k", 10*time.Second)
	require.ErrorIs(t, err, ErrNotObtained)
	assert.NotErrorIs(t, err, ErrQuorumUnreachable)
	flush()
	require.NoError(t, l.Unlock(ctx))
	// Unlock returns at a quorum; the last release may still be in flight.
	assert.Eventually(t, func() bool {
		for _, s := range servers {
			if v, _ := holder(t, s, "k"); v != "" {
				return false
			}
		}
		return true
	}, 5*time.Second, 2*time.Millisecond)
}

// TestScriptsNeverCarryKeysOrTokens: keys and tokens travel as KEYS/ARGV, so
// locking many keys with fresh tokens caches exactly our three scripts on a
// node (a script spliced with its arguments would add one per call).
func TestScriptsNeverCarryKeysOrTokens(t *testing.T) {
	servers, c := cluster(t, 1)
	ctx := context.Background()
	do(t, servers[0], "SCRIPT", "FLUSH")
	for i := range 5 {
		l, err := c.TryLock(ctx, fmt.Sprintf("key-%d", i), 10*time.Second)
		require.NoError(t, err)
		require.NoError(t, l.Extend(ctx, 10*time.Second))
		require.NoError(t, l.Unlock(ctx))
	}
	info, err := redis.String(servers[0].Do("INFO", "memory"))
	require.NoError(t, err)
	assert.Contains(t, info, "number_of_cached_scripts:3\r\n")
	exists, err := redis.Ints(servers[0].Do("SCRIPT", "EXISTS", acquireScript.Hash(), extendScript.Hash(), releaseScript.Hash()))
	require.NoError(t, err)
	assert.Equal(t, []int{1, 1, 1}, exists)
	for _, src := range []string{acquireSrc, extendSrc, releaseSrc} {
		assert.NotContains(t, src, "%", "no format verbs: the sources are never templated")
	}
}

// TestNodeTurnsReplica: first contact rejects replicas; a node demoted to a
// replica after first contact refuses our writes with READONLY. Its vote
// fails, the other nodes decide.
func TestNodeTurnsReplica(t *testing.T) {
	servers, c := cluster(t, 3)
	master := redistest.Start(t, 1)[0] // outside the cluster: replication between our nodes would break independence
	ctx := context.Background()
	l, err := c.TryLock(ctx, "k", 10*time.Second) // first contact done on all three
	require.NoError(t, err)

	do(t, servers[0], "REPLICAOF", "127.0.0.1", master.Port)
	require.Eventually(t, func() bool {
		info, err := redis.String(servers[0].Do("INFO", "replication"))
		return err == nil && strings.Contains(info, "master_link_status:up")
	}, 10*time.Second, 10*time.Millisecond)

	servers[1].Kill() // so that the replica's vote matters
	_, err = c.TryLock(ctx, "k3", 10*time.Second)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrQuorumUnreachable)
	assert.Contains(t, err.Error(), "READONLY")
	v, _ := holder(t, servers[0], "k3")
	assert.Empty(t, v, "nothing written on the replica")
	// The attempt returns once a quorum is impossible; the release on a node
	// that answered late runs in the background.
	assert.Eventually(t, func() bool { v, _ := holder(t, servers[2], "k3"); return v == "" },
		5*time.Second, 2*time.Millisecond, "the miss is released")

	// The held lock: the replica's data was replaced by its master's, one
	// node is down, so Extend and Unlock cannot reach a quorum; they say so
	// rather than claim success.
	assert.ErrorIs(t, l.Extend(ctx, 10*time.Second), ErrQuorumUnreachable)
	assert.ErrorIs(t, l.Unlock(ctx), ErrQuorumUnreachable)
}

// TestOutOfMemory: a node at maxmemory with noeviction refuses the SET in
// the acquire script with OOM. Extend (PEXPIRE) and Unlock (DEL) do not grow
// memory and still work, so a held lock is neither lost nor stuck.
func TestOutOfMemory(t *testing.T) {
	servers, c := cluster(t, 3)
	ctx := context.Background()
	l, err := c.TryLock(ctx, "held", 10*time.Second)
	require.NoError(t, err)
	for _, s := range servers {
		do(t, s, "CONFIG", "SET", "maxmemory-policy", "noeviction")
		do(t, s, "CONFIG", "SET", "maxmemory", 1)
	}
	t.Cleanup(func() {
		for _, s := range servers {
			s.Do("CONFIG", "SET", "maxmemory", 0)
		}
	})
	_, err = c.TryLock(ctx, "k", 10*time.Second)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrQuorumUnreachable)
	assert.Contains(t, err.Error(), "OOM")
	for _, s := range servers {
		v, _ := holder(t, s, "k")
		assert.Empty(t, v)
	}
	require.NoError(t, l.Extend(ctx, 20*time.Second))
	require.NoError(t, l.Unlock(ctx))
}

// TestLoadingNode: a server still loading its dataset answers INFO (first
// contact passes) but refuses scripts with LOADING. The load is slowed with
// the hidden key-load-delay setting (microseconds per key) so that the window
// is seconds wide; loading-process-events-interval-bytes makes the server
// answer (with LOADING) while it loads.
func TestLoadingNode(t *testing.T) {
	dir := t.TempDir()
	seed := redistest.Start(t, 1, "--dir", dir, "--dbfilename", "big.rdb")[0]
	conn, err := seed.Conn()
	require.NoError(t, err)
	for i := range 20000 {
		require.NoError(t, conn.Send("SET", fmt.Sprintf("filler:%d", i), "x"))
	}
	require.NoError(t, conn.Flush())
	for range 20000 {
		_, err := conn.Receive()
		require.NoError(t, err)
	}
	_, err = conn.Do("SAVE")
	require.NoError(t, err)
	conn.Close()
	seed.Kill()
	_, err = os.Stat(dir + "/big.rdb")
	require.NoError(t, err)

	// 20000 keys × 100 µs ≈ 2 s of loading (measured ~4 s in all under -race).
	// Everything else is started first so that the window is not spent.
	others := redistest.Start(t, 2)
	loading, err := redistest.NewServer("--dir", dir, "--dbfilename", "big.rdb", "--key-load-delay", "100", "--loading-process-events-interval-bytes", "1024")
	require.NoError(t, err)
	t.Cleanup(loading.Close)
	c := dial(t, append([]*redistest.Server{loading}, others...), WithNodeTimeout(time.Second))
	ctx := context.Background()

	info, err := redis.String(loading.Do("INFO", "persistence"))
	require.NoError(t, err)
	if !strings.Contains(info, "\r\nloading:1\r\n") {
		t.Fatalf("the server finished loading before the test could use it; raise key-load-delay")
	}
	others[0].Kill()
	_, err = c.TryLock(ctx, "k", 10*time.Second)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrQuorumUnreachable)
	assert.Contains(t, err.Error(), "LOADING")

	// Once loaded, the same Client uses the node.
	require.Eventually(t, func() bool {
		info, err := redis.String(loading.Do("INFO", "persistence"))
		return err == nil && strings.Contains(info, "\r\nloading:0\r\n")
	}, 60*time.Second, 50*time.Millisecond)
	l, err := c.TryLock(ctx, "k", 10*time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Unlock(ctx))
}

func TestEvictionPolicy(t *testing.T) {
	servers := redistest.Start(t, 3)
	do(t, servers[0], "CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
	do(t, servers[1], "CONFIG", "SET", "maxmemory-policy", "volatile-ttl")
	ctx := context.Background()

	t.Run("warning", func(t *testing.T) {
		var mu sync.Mutex
		warned := map[string]string{}
		c := dial(t, servers, WithEvictionWarning(func(addr, policy string) {
			mu.Lock()
			defer mu.Unlock()
			warned[addr] = policy
		}))
		for range 3 { // warned once per node, however many operations
			l, err := c.TryLock(ctx, "k", 10*time.Second)
			require.NoError(t, err, "a warning does not refuse the node")
			require.NoError(t, l.Unlock(ctx))
		}
		require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(warned) == 2 }, 5*time.Second, time.Millisecond)
		mu.Lock()
		assert.Equal(t, map[string]string{servers[0].Addr: "allkeys-lru", servers[1].Addr: "volatile-ttl"}, warned)
		mu.Unlock()
	})
	t.Run("strict", func(t *testing.T) {
		c := dial(t, servers, WithStrictEvictionPolicy(), WithEvictionWarning(func(addr, policy string) {
			t.Errorf("strict mode refuses instead of warning (%s %s)", addr, policy)
		}))
		_, err := c.TryLock(ctx, "k", 10*time.Second)
		require.Error(t, err)
		assert.ErrorIs(t, err, ErrEvictionPolicy)
		assert.ErrorIs(t, err, ErrQuorumUnreachable)
		assert.Contains(t, err.Error(), "allkeys-lru")
		var ne *NodeError
		require.ErrorAs(t, err, &ne)
		for _, e := range unwrapAll(err) {
			var ne *NodeError
			if errors.As(e, &ne) && errors.Is(ne, ErrEvictionPolicy) {
				assert.Contains(t, []string{servers[0].Addr, servers[1].Addr}, ne.Addr)
			}
		}
		assert.Eventually(t, func() bool { v, _ := holder(t, servers[2], "k"); return v == "" },
			5*time.Second, 2*time.Millisecond, "the miss is released on the accepted node")
	})
	t.Run("nil hook", func(t *testing.T) {
		_, err := Dial(redistest.Addrs(servers), WithEvictionWarning(nil))
		assert.ErrorContains(t, err, "WithEvictionWarning(nil)")
	})
}

// TestEvictionDefaultWarning: without a hook the warning goes to
// slog.Default(), names the node and the policy, and never a password.
func TestEvictionDefaultWarning(t *testing.T) {
	s := redistest.Start(t, 1, "--requirepass", "adm1n-pw", "--maxmemory-policy", "allkeys-lru")[0]
	var buf bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, nil)))
	defer slog.SetDefault(prev)

	c, err := Dial([]string{"redis://default:adm1n-pw@" + s.Addr})
	require.NoError(t, err)
	defer c.Close()
	l, err := c.TryLock(context.Background(), "k", 10*time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Unlock(context.Background()))
	out := buf.String()
	assert.Contains(t, out, "level=WARN")
	assert.Contains(t, out, "maxmemory_policy=allkeys-lru")
	assert.Contains(t, out, s.Addr)
	assert.NotContains(t, out, "adm1n-pw")
	assert.Equal(t, 1, strings.Count(out, "level=WARN"), "once per node")
}

func TestEvicts(t *testing.T) {
	for policy, want := range map[string]bool{
		"noeviction": false, "": false,
		"allkeys-lru": true, "allkeys-lfu": true, "allkeys-random": true,
		"volatile-lru": true, "volatile-lfu": true, "volatile-random": true, "volatile-ttl": true,
	} {
		assert.Equal(t, want, evicts(policy), policy)
	}
}
