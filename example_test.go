package redlock_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/redlockgo/redlock"
)

// Take a lock on a quorum of five nodes, work while it is valid, release it.
func Example() {
	// exampleNodes holds five "host:port" addresses of independent masters.
	client, err := redlock.Dial(exampleNodes)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	ctx := context.Background()
	lock, err := client.Lock(ctx, "orders/42", 10*time.Second)
	if err != nil {
		fmt.Println("not obtained:", err)
		return
	}
	defer lock.Unlock(ctx) // releases even if ctx is cancelled by then

	if time.Until(lock.Until()) > 0 { // check validity before touching the resource
		fmt.Println("holding", lock.Key())
	}
	// Output: holding orders/42
}

// A second TryLock on a held key fails with ErrNotObtained; it is contention,
// not an outage.
func ExampleClient_TryLock() {
	client, err := redlock.Dial(exampleNodes)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()
	ctx := context.Background()

	first, err := client.TryLock(ctx, "report", 5*time.Second)
	if err != nil {
		fmt.Println(err)
		return
	}
	_, err = client.TryLock(ctx, "report", 5*time.Second)
	fmt.Println("second attempt obtained:", err == nil)
	fmt.Println("contended:", errors.Is(err, redlock.ErrNotObtained) && !errors.Is(err, redlock.ErrQuorumUnreachable))

	fmt.Println("unlock:", first.Unlock(ctx))
	again, err := client.TryLock(ctx, "report", 5*time.Second)
	fmt.Println("after unlock obtained:", err == nil)
	again.Unlock(ctx)
	// Output:
	// second attempt obtained: false
	// contended: true
	// unlock: <nil>
	// after unlock obtained: true
}

// Extend keeps a lock for longer, as long as a quorum still holds it.
func ExampleLock_Extend() {
	client, err := redlock.Dial(exampleNodes)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()
	ctx := context.Background()

	lock, err := client.TryLock(ctx, "batch", 2*time.Second)
	if err != nil {
		fmt.Println(err)
		return
	}
	before := lock.Until()
	if err := lock.Extend(ctx, 30*time.Second); err != nil {
		fmt.Println("lost or unreachable:", err)
		return
	}
	fmt.Println("validity moved forward:", lock.Until().After(before))
	fmt.Println(lock.Unlock(ctx))

	// Once released, the lock cannot be extended.
	err = lock.Extend(ctx, time.Second)
	fmt.Println(errors.Is(err, redlock.ErrLockLost))
	// Output:
	// validity moved forward: true
	// <nil>
	// true
}

// Do runs work under a lock that renews itself for as long as the work takes,
// and cancels the work's context the moment the lock is lost.
func ExampleClient_Do() {
	client, err := redlock.Dial(exampleNodes)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()
	ctx := context.Background()

	// The work takes three times the TTL: auto-extension keeps the lock.
	const ttl = time.Second
	err = client.Do(ctx, "nightly-report", ttl, func(ctx context.Context, lock *redlock.Lock) error {
		for step := 1; step <= 3; step++ {
			select {
			case <-ctx.Done(): // the lock was lost: stop touching the resource
				return context.Cause(ctx)
			case <-time.After(ttl):
			}
			fmt.Println("step", step, "done, still valid:", time.Now().Before(lock.Until()))
		}
		return nil
	})
	switch {
	case errors.Is(err, redlock.ErrNotObtained):
		fmt.Println("someone else holds it:", err)
	case errors.Is(err, redlock.ErrLockLost):
		fmt.Println("lost the lock mid-way:", err)
	case err != nil:
		fmt.Println("work failed:", err)
	default:
		fmt.Println("finished, lock released")
	}
	// Output:
	// step 1 done, still valid: true
	// step 2 done, still valid: true
	// step 3 done, still valid: true
	// finished, lock released
}

// storage is a resource protected by fencing: it remembers the largest token
// it has accepted and rejects writes that carry a smaller one, so a holder
// that was paused past its lock's validity cannot overwrite its successor.
type storage struct {
	highest uint64
	data    string
}

func (s *storage) write(fence uint64, data string) error {
	if fence < s.highest {
		return fmt.Errorf("rejected: token %d is older than %d", fence, s.highest)
	}
	s.highest, s.data = fence, data
	return nil
}

// With WithFencing every lock carries a token that grows from one holder of a
// key to the next; the resource checks it on every write.
func ExampleLock_Fence() {
	client, err := redlock.Dial(exampleNodes, redlock.WithFencing())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()
	ctx := context.Background()
	var store storage

	first, err := client.TryLock(ctx, "ledger", 5*time.Second)
	if err != nil {
		fmt.Println(err)
		return
	}
	stale := first.Fence() // a holder about to be paused keeps its token
	fmt.Println("first write:", store.write(stale, "from the first holder"))
	first.Unlock(ctx) // stands for the lock expiring during the pause

	second, err := client.TryLock(ctx, "ledger", 5*time.Second)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer second.Unlock(ctx)
	fmt.Println("tokens increase:", second.Fence() > stale)
	fmt.Println("second write:", store.write(second.Fence(), "from the second holder"))

	// The first holder wakes up and writes with its old token.
	err = store.write(stale, "late write")
	fmt.Println("late write rejected:", err != nil)
	fmt.Println("data:", store.data)
	// Output:
	// first write: <nil>
	// tokens increase: true
	// second write: <nil>
	// late write rejected: true
	// data: from the second holder
}

// Log every acquisition, unlock and lock end with log/slog: SlogObserver
// logs grants and releases at Debug, and losses, failed renewals and node
// errors at Warn. (This handler keeps only a few attributes, so that the
// output is stable; a real one would log them all: timings, vote counts,
// node errors.)
func ExampleSlogObserver() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			switch {
			case len(groups) > 0:
				return slog.Attr{}
			case a.Key == slog.LevelKey || a.Key == slog.MessageKey || a.Key == "key" || a.Key == "outcome":
				return a
			}
			return slog.Attr{}
		},
	}))
	client, err := redlock.Dial(exampleNodes, redlock.WithObserver(redlock.SlogObserver(logger)))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	ctx := context.Background()
	lock, err := client.TryLock(ctx, "invoices", 5*time.Second)
	if err != nil {
		return
	}
	lock.Unlock(ctx)
	// Output:
	// level=DEBUG msg="redlock: lock acquired" key=invoices outcome=ok
	// level=DEBUG msg="redlock: lock ended" key=invoices
	// level=DEBUG msg="redlock: lock released" key=invoices outcome=ok
}
