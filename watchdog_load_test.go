//go:build unix

package redlock

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/require"

	"github.com/redlockgo/redlock/internal/redistest"
)

// TestWatchdogLoad measures what auto-extension costs: 10 000 locks with a
// 10 s TTL kept alive by one Client over 5 local nodes. It reports the
// client's CPU (getrusage user+sys over the window, divided by wall time)
// and the commands per second the nodes receive. Target: under 5 % of one
// core. It runs only with REDLOCK_WATCHDOG_LOAD=1 (about a minute):
//
//	REDLOCK_WATCHDOG_LOAD=1 go test -run TestWatchdogLoad -v .
//
// REDLOCK_WATCHDOG_LOCKS and REDLOCK_WATCHDOG_WINDOW (a duration) override
// the lock count and the measuring window (default 40s);
// REDLOCK_WATCHDOG_PROFILE=file writes a CPU profile of the window. Figures are
// recorded in docs/watchdog.md.
func TestWatchdogLoad(t *testing.T) {
	if os.Getenv("REDLOCK_WATCHDOG_LOAD") == "" {
		t.Skip("load measurement: set REDLOCK_WATCHDOG_LOAD=1")
	}
	locks, window, ttl := 10000, 40*time.Second, 10*time.Second
	if v := os.Getenv("REDLOCK_WATCHDOG_LOCKS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err)
		locks = n
	}
	if v := os.Getenv("REDLOCK_WATCHDOG_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		require.NoError(t, err)
		window = d
	}
	servers, c := cluster(t, 5)
	ctx := context.Background()

	// Acquire and keep alive, 32 at a time.
	held := make([]*Lock, locks)
	var wg sync.WaitGroup
	next := make(chan int)
	acquireStart := time.Now()
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				l, err := c.Lock(ctx, fmt.Sprint("load-", i), ttl)
				if err != nil {
					t.Errorf("lock %d: %v", i, err)
					continue
				}
				if err := l.KeepAlive(); err != nil {
					t.Errorf("keep-alive %d: %v", i, err)
				}
				held[i] = l
			}
		}()
	}
	for i := range held {
		next <- i
	}
	close(next)
	wg.Wait()
	require.False(t, t.Failed())
	t.Logf("acquired %d locks in %v", locks, time.Since(acquireStart).Round(time.Millisecond))

	// Steady state: past the first renewal of every lock.
	time.Sleep(ttl/RenewalDivisor + time.Second)

	if path := os.Getenv("REDLOCK_WATCHDOG_PROFILE"); path != "" {
		f, err := os.Create(path)
		require.NoError(t, err)
		defer f.Close()
		require.NoError(t, pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}
	cmds0, evals0, srvCPU0 := nodeStats(t, servers)
	ru0, wall0 := rusage(t), time.Now()
	time.Sleep(window)
	ru1, wall := rusage(t), time.Since(wall0)
	pprof.StopCPUProfile()
	cmds1, evals1, srvCPU1 := nodeStats(t, servers)

	ended := 0
	for _, l := range held {
		select {
		case <-l.Done():
			ended++
		default:
		}
	}
	cpu := (ru1 - ru0).Seconds() / wall.Seconds()
	perSec := func(a, b int64) float64 { return float64(b-a) / wall.Seconds() }
	t.Logf("window %v: client CPU %.2f%% of one core (%v user+sys)", wall.Round(time.Millisecond), 100*cpu, (ru1 - ru0).Round(time.Millisecond))
	t.Logf("nodes: %.1f commands/s in total (%.1f EVAL/EVALSHA/s), %.1f per node", perSec(cmds0, cmds1), perSec(evals0, evals1), perSec(cmds0, cmds1)/float64(len(servers)))
	t.Logf("nodes: %.2f%% of one core in total for the 5 redis-servers", 100*(srvCPU1-srvCPU0)/wall.Seconds())
	t.Logf("lock renewals/s expected at ttl/%d: %.0f", RenewalDivisor, float64(locks)/(ttl/RenewalDivisor).Seconds())
	require.Zero(t, ended, "kept-alive locks ended during the window")
	if cpu > 0.05 {
		t.Logf("ABOVE TARGET: %.2f%% > 5%% of one core", 100*cpu)
	}

	start := time.Now()
	for _, l := range held {
		l.Unlock(ctx)
	}
	t.Logf("unlocked %d locks in %v", locks, time.Since(start).Round(time.Millisecond))
}

// rusage returns this process's user+sys CPU time.
func rusage(t *testing.T) time.Duration {
	var ru syscall.Rusage
	require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// nodeStats sums, over the nodes, the commands run (INFO commandstats, all
// commands), the script calls among them, and the servers' CPU seconds.
func nodeStats(t *testing.T, servers []*redistest.Server) (cmds, evals int64, cpu float64) {
	for _, s := range servers {
		info, err := redis.String(s.Do("INFO", "commandstats"))
		require.NoError(t, err)
		for _, line := range strings.Split(info, "\n") {
			_, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
			if !ok {
				continue
			}
			n, _ := strconv.ParseInt(strings.SplitN(rest, ",", 2)[0], 10, 64)
			cmds += n
		}
		evals += commandCalls(info, "evalsha") + commandCalls(info, "eval")
		cpuInfo, err := redis.String(s.Do("INFO", "cpu"))
		require.NoError(t, err)
		for _, line := range strings.Split(cpuInfo, "\n") {
			k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
			if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
				f, _ := strconv.ParseFloat(v, 64)
				cpu += f
			}
		}
	}
	return cmds, evals, cpu
}
