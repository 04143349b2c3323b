package prometheus_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/redlockgo/redlock"
	redlockprom "github.com/redlockgo/redlock/metrics/prometheus"
)

// Register the metrics, wire them into a Client, and read them back as a
// scrape would (serve the registry with promhttp.HandlerFor in a real
// program).
func Example() {
	m := redlockprom.New()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)

	client, err := redlock.Dial(exampleNodes, redlock.WithObserver(m.Observer()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()
	ctx := context.Background()
	lock, err := client.TryLock(ctx, "jobs/7", 5*time.Second)
	if err != nil {
		fmt.Println(err)
		return
	}
	_, err = client.TryLock(ctx, "jobs/7", 5*time.Second) // contended
	fmt.Println("second attempt:", err != nil)
	lock.Unlock(ctx)

	err = testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP redlock_acquisitions_total Acquisition attempts (TryLock, each attempt of Lock and Do) by outcome.
# TYPE redlock_acquisitions_total counter
redlock_acquisitions_total{outcome="contended"} 1
redlock_acquisitions_total{outcome="granted"} 1
# HELP redlock_locks_held Locks granted and not yet ended (Unlock, loss, expiry seen by Done, Client.Close).
# TYPE redlock_locks_held gauge
redlock_locks_held 0
# HELP redlock_unlocks_total Unlock calls by outcome.
# TYPE redlock_unlocks_total counter
redlock_unlocks_total{outcome="ok"} 1
`), "redlock_acquisitions_total", "redlock_locks_held", "redlock_unlocks_total")
	fmt.Println("metrics as expected:", err == nil)
	// Output:
	// second attempt: true
	// metrics as expected: true
}
