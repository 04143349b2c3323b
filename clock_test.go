package redlock

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestDrift(t *testing.T) {
	tests := []struct {
		ttl    time.Duration
		factor float64
		want   time.Duration
	}{
		{10 * time.Second, 0.01, 102 * time.Millisecond},
		{time.Second, 0.01, 12 * time.Millisecond},
		{100 * time.Millisecond, 0.01, 3 * time.Millisecond},
		{time.Second, 0, 2 * time.Millisecond},
		{time.Second, 0.5, 502 * time.Millisecond},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, drift(tt.ttl, tt.factor), "drift(%v, %v)", tt.ttl, tt.factor)
	}
}

func TestValidity(t *testing.T) {
	tests := []struct {
		name                string
		ttl, elapsed, drift time.Duration
		want                time.Duration
		granted             bool
	}{
		{"fast attempt", 10 * time.Second, 5 * time.Millisecond, 102 * time.Millisecond, 9893 * time.Millisecond, true},
		{"attempt ate the ttl", time.Second, 990 * time.Millisecond, 12 * time.Millisecond, -2 * time.Millisecond, false},
		{"exactly zero is refused", time.Second, 988 * time.Millisecond, 12 * time.Millisecond, 0, false},
		{"drift only", 3 * time.Millisecond, 0, 3 * time.Millisecond, 0, false},
		// redsync once added the drift instead of subtracting it.
		{"drift is subtracted", 100 * time.Millisecond, 0, 3 * time.Millisecond, 97 * time.Millisecond, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := validity(tt.ttl, tt.elapsed, tt.drift)
			assert.Equal(t, tt.want, v)
			assert.Equal(t, tt.granted, v > 0)
		})
	}
}

func TestWireTTL(t *testing.T) {
	assert.Equal(t, time.Second, wireTTL(time.Second))
	// Truncated, never rounded up: the node must not outlive the client's idea of the lock.
	assert.Equal(t, 1*time.Millisecond, wireTTL(1999*time.Microsecond))
	assert.Equal(t, time.Duration(0), wireTTL(999*time.Microsecond))
}

func TestDefaultNodeTimeout(t *testing.T) {
	tests := []struct{ ttl, want time.Duration }{
		{30 * time.Second, MaxNodeTimeout},
		{10 * time.Second, time.Second},
		{5 * time.Second, 500 * time.Millisecond},
		{2 * time.Second, MinNodeTimeout},
		{time.Second, MinNodeTimeout},
		{300 * time.Millisecond, 150 * time.Millisecond}, // never above ttl/2
		{100 * time.Millisecond, 50 * time.Millisecond},  // never above ttl/2
		{3 * time.Millisecond, 1500 * time.Microsecond},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, defaultNodeTimeout(tt.ttl), "ttl %v", tt.ttl)
	}
}
