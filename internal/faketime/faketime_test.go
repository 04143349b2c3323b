package faketime_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redlockgo/redlock/internal/faketime"
	"github.com/redlockgo/redlock/internal/redistest"
)

// serverTime returns the server's wall clock (TIME).
func serverTime(t *testing.T, s *redistest.Server) time.Time {
	v, err := redis.Int64s(s.Do("TIME"))
	require.NoError(t, err)
	return time.Unix(v[0], v[1]*1000)
}

// TestShimOnRedis checks the shim on a real redis-server: it starts (where
// libfaketime hangs), its TIME and key expiry follow the fake wall clock, and
// a rate change or a jump takes effect while it runs.
func TestShimOnRedis(t *testing.T) {
	dir := t.TempDir()
	lib, err := faketime.Build(dir)
	if err != nil {
		t.Skipf("clock shim unavailable, skipping: %v", err)
	}
	ctl, err := faketime.NewControl(filepath.Join(dir, "ctl"))
	require.NoError(t, err)
	defer ctl.Close()
	s, err := redistest.NewServerEnv(ctl.Env(lib))
	require.NoError(t, err)
	defer s.Close()

	assert.WithinDuration(t, time.Now(), serverTime(t, s), time.Second, "no fault yet")

	require.NoError(t, ctl.Jump(time.Hour))
	assert.WithinDuration(t, time.Now().Add(time.Hour), serverTime(t, s), time.Second, "jumped an hour ahead")

	_, err = s.Do("SET", "k", "v", "PX", 3000)
	require.NoError(t, err)
	require.NoError(t, ctl.SetRate(4))
	time.Sleep(400 * time.Millisecond) // 1.6 s on the fake clock
	pttl, err := redis.Int64(s.Do("PTTL", "k"))
	require.NoError(t, err)
	assert.Less(t, pttl, int64(3000-1200), "the key ages four times faster")

	require.NoError(t, ctl.Jump(10*time.Second))
	n, err := redis.Int(s.Do("EXISTS", "k"))
	require.NoError(t, err)
	assert.Zero(t, n, "a forward jump expires the key at once")

	assert.Error(t, ctl.SetRate(0))
}
