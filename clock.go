package redlock

import "time"

// The validity arithmetic of the Redlock algorithm (step 4 of the Redis
// documentation's description) lives here, in pure functions, so that it can
// be table-tested and so that there is exactly one place to read it.

// Drift defaults. The reference implementation (antirez/redlock-rb) uses
// ttl×0.01 + 2 ms: 1 ms for Redis's expiry precision and 1 ms of minimum drift.
const (
	// DefaultDriftFactor is the fraction of the TTL reserved for the rate
	// difference between the client's clock and the nodes' clocks.
	DefaultDriftFactor = 0.01

	// DriftPadding is added to every drift allowance: Redis expires keys with
	// millisecond precision, and at least one further millisecond is reserved.
	DriftPadding = 2 * time.Millisecond
)

// clock is the library's only time seam. Every elapsed-time computation goes
// through it, so tests can skew the client's clock (the chaos suite's
// "client-side drift" scenario). The default, time.Now, carries Go's monotonic
// reading, so durations between two readings are immune to wall-clock steps.
type clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// drift returns the allowance for clock-rate differences over ttl.
func drift(ttl time.Duration, factor float64) time.Duration {
	return time.Duration(float64(ttl)*factor) + DriftPadding
}

// validity returns how long a lock acquired with ttl stays valid once an
// attempt that took elapsed (measured from the attempt's start on the
// monotonic clock) has succeeded. A result ≤ 0 means the lock must not be
// granted: the first node may already have expired it.
func validity(ttl, elapsed, drift time.Duration) time.Duration {
	return ttl - elapsed - drift
}

// wireTTL truncates ttl to the whole milliseconds sent as PX/PEXPIRE. The
// truncated value, never the caller's, is used for the validity computation:
// rounding up would let a node expire the key before the client thinks.
func wireTTL(ttl time.Duration) time.Duration {
	return ttl.Truncate(time.Millisecond)
}
