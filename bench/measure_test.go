package main

import (
	"context"
	"testing"
	"time"
)

// TestMeasureKeepsUnfinishedWaits: in a run of waits for a lock, the waits
// that the end of the run cuts short are kept at their length so far, and
// one that got its lock as the run ended counts as done; a run of cycles
// drops both, as before.
func TestMeasureKeepsUnfinishedWaits(t *testing.T) {
	const d = 100 * time.Millisecond
	const workers = 4
	// Worker 0 gets its lock every 5 ms; the others wait until the run ends.
	op := func(ctx context.Context, worker int) (time.Duration, bool) {
		start := time.Now()
		if worker == 0 {
			time.Sleep(5 * time.Millisecond)
			return time.Since(start), true
		}
		<-ctx.Done()
		return time.Since(start), false
	}
	for _, tc := range []struct {
		name       string
		unfinished bool
	}{{"waits", true}, {"cycles", false}} {
		t.Run(tc.name, func(t *testing.T) {
			s := measure(workers, d, tc.unfinished, op)
			if s.Failures != 0 {
				t.Errorf("failures = %d, want 0: a wait cut short by the end of the run is no failure", s.Failures)
			}
			if !tc.unfinished {
				if s.Unfinished != 0 || int64(len(s.Lat)) != s.Ops {
					t.Errorf("cycles: unfinished = %d, %d latencies for %d ops; want 0 and one per op", s.Unfinished, len(s.Lat), s.Ops)
				}
				return
			}
			if s.Unfinished != workers-1 {
				t.Errorf("unfinished = %d, want %d", s.Unfinished, workers-1)
			}
			if int64(len(s.Lat)) != s.Ops+s.Unfinished {
				t.Errorf("%d latencies, want one per op and per unfinished wait (%d)", len(s.Lat), s.Ops+s.Unfinished)
			}
			// The cut-short waits lasted (nearly: their workers started
			// after the run's clock did) the whole run: the longest wait
			// and the p99 show them.
			if got := s.pct(1); got < d/2 {
				t.Errorf("longest wait %v, want about the run's %v", got, d)
			}
			if got := s.pct(0.99); got < d/2 {
				t.Errorf("p99 wait %v, want about %v: %d of %d waits lasted the whole run", got, d, s.Unfinished, len(s.Lat))
			}
		})
	}
}
