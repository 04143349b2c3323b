package redlock

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		raw            string
		addr, user, pw string
		db             int
		errContains    string
	}{
		{raw: "127.0.0.1:6379", addr: "127.0.0.1:6379"},
		{raw: "LocalHost:6380", addr: "localhost:6380"},
		{raw: "[::1]:6379", addr: "[::1]:6379"},
		{raw: "[0:0:0:0:0:0:0:1]:6379", addr: "[::1]:6379"},
		{raw: "redis://127.0.0.1:6379", addr: "127.0.0.1:6379"},
		{raw: "redis://127.0.0.1:6379/3", addr: "127.0.0.1:6379", db: 3},
		{raw: "redis://alice:s3cret@h:1/", addr: "h:1", user: "alice", pw: "s3cret"},
		{raw: "redis://:s3cret@h:1", addr: "h:1", pw: "s3cret"},
		{raw: "redis://s3cret@h:1", addr: "h:1", pw: "s3cret"},
		{raw: "", errContains: "empty"},
		{raw: "127.0.0.1", errContains: "host:port"},
		{raw: ":6379", errContains: "missing host"},
		{raw: "h:0", errContains: "invalid port"},
		{raw: "h:65536", errContains: "invalid port"},
		{raw: "h:abc", errContains: "invalid port"},
		{raw: "http://h:1", errContains: "unsupported scheme"},
		{raw: "rediss://alice:s3cret@h:1/2", addr: "h:1", user: "alice", pw: "s3cret", db: 2},
		{raw: "unix:///tmp/redis.sock", errContains: "unsupported scheme"},
		{raw: "redis://h:1/x", errContains: "database"},
		{raw: "redis://h:1/-1", errContains: "database"},
		{raw: "redis://h:1?db=2", errContains: "query"},
		{raw: "redis://h", errContains: "host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			ep, err := parseEndpoint(tt.raw)
			if tt.errContains != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.errContains)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.addr, ep.addr)
			assert.Equal(t, tt.user, ep.username)
			assert.Equal(t, tt.pw, ep.password)
			assert.Equal(t, tt.db, ep.db)
			assert.NotContains(t, ep.String(), "s3cret")
		})
	}
}

// TestParseEndpointNeverLeaksPassword feeds malformed URLs whose userinfo
// holds a password: url.Parse's own errors would quote the raw URL.
func TestParseEndpointNeverLeaksPassword(t *testing.T) {
	for _, raw := range []string{
		"redis://u:s3cret@[::1",
		"redis://u:s3cret@h:99999",
		"redis://u:s3cret%zz@h:1",
		"redis://u:s3cret@h:1/x",
		"redis://u:s3cret@h:1?x=1",
		"rediss://u:s3cret@h:1/x",
		"redis://h:1/u:s3cret@h:2",
		"redis://u:s3cret@/path@h:1",
		"redis://u:s3cret@h:abc",
		"redis ://u:s3cret@h:1",
		"u:s3cret@h:1",
		"s3cret@h:1",
	} {
		_, err := parseEndpoint(raw)
		require.Error(t, err, raw)
		assert.NotContains(t, err.Error(), "s3cret", raw)
		_, err = Dial([]string{raw})
		require.Error(t, err, raw)
		assert.NotContains(t, err.Error(), "s3cret", raw)
	}
}

func TestRedactURL(t *testing.T) {
	for raw, want := range map[string]string{
		"redis://u:p@h:1/2":  "redis://xxxxx@h:1/2",
		"redis://h:1":        "redis://h:1",
		"h:1":                "h:1",
		"redis://u:p@x/@h:1": "redis://xxxxx@h:1",
	} {
		got := redactURL(raw)
		assert.Equal(t, want, got, raw)
		assert.False(t, strings.Contains(got, ":p@"), raw)
	}
}
