package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/go-redsync/redsync/v4"
	rsredis "github.com/go-redsync/redsync/v4/redis"
	rsredigo "github.com/go-redsync/redsync/v4/redis/redigo"
	"github.com/gomodule/redigo/redis"

	"github.com/redlockgo/redlock"
)

// ttl is the lock TTL of every benchmark: long enough that no lock expires.
const ttl = 10 * time.Second

// locker is one implementation under test.
type locker interface {
	// cycle takes key with one attempt and releases it; it reports success.
	cycle(ctx context.Context, key string) bool
	// lock waits for key; unlock releases it.
	lock(ctx context.Context, key string) (unlock func(), ok bool)
	close()
}

func newLocker(lib string, addrs []string) (locker, error) {
	switch lib {
	case "redlock", "redlock-pool": // redlock-pool: the pool-per-call transport
		c, err := redlock.Dial(addrs, redlock.WithPipelining(lib == "redlock"))
		if err != nil {
			return nil, err
		}
		return redlockLocker{c}, nil
	case "redsync":
		var pools []rsredis.Pool
		var owned []*redis.Pool
		for _, a := range addrs {
			p := newPool(a)
			owned = append(owned, p)
			pools = append(pools, rsredigo.NewPool(p))
		}
		return &redsyncLocker{rs: redsync.New(pools...), pools: owned}, nil
	case "floor":
		return newFloor(addrs)
	}
	return nil, fmt.Errorf("unknown lib %q (want redlock, redsync or floor)", lib)
}

func newPool(addr string) *redis.Pool {
	return &redis.Pool{MaxIdle: 256, IdleTimeout: time.Minute, DialContext: func(ctx context.Context) (redis.Conn, error) {
		return redis.DialContext(ctx, "tcp", addr)
	}}
}

type redlockLocker struct{ c *redlock.Client }

func (r redlockLocker) cycle(ctx context.Context, key string) bool {
	l, err := r.c.TryLock(ctx, key, ttl)
	if err != nil {
		return false
	}
	return l.Unlock(ctx) == nil
}

func (r redlockLocker) lock(ctx context.Context, key string) (func(), bool) {
	l, err := r.c.Lock(ctx, key, ttl)
	if err != nil {
		return nil, false
	}
	return func() { l.Unlock(context.Background()) }, true
}

func (r redlockLocker) close() { r.c.Close() }

// redsyncLocker is github.com/go-redsync/redsync/v4 with its redigo adapter,
// used as its README shows.
type redsyncLocker struct {
	rs    *redsync.Redsync
	pools []*redis.Pool
}

func (r *redsyncLocker) cycle(ctx context.Context, key string) bool {
	m := r.rs.NewMutex(key, redsync.WithExpiry(ttl), redsync.WithTries(1))
	if err := m.TryLockContext(ctx); err != nil {
		return false
	}
	ok, err := m.UnlockContext(ctx)
	return ok && err == nil
}

func (r *redsyncLocker) lock(ctx context.Context, key string) (func(), bool) {
	m := r.rs.NewMutex(key, redsync.WithExpiry(ttl), redsync.WithTries(math.MaxInt32))
	if err := m.LockContext(ctx); err != nil {
		return nil, false
	}
	return func() { m.UnlockContext(context.Background()) }, true
}

func (r *redsyncLocker) close() {
	for _, p := range r.pools {
		p.Close()
	}
}

// floor is the minimal hand-written redigo fan-out: the same scripts and
// arguments redlock sends (read from the repository's scripts/), one
// goroutine per node, and nothing else — no timeouts, no validity check, no
// first contact. It is the cost of the network work itself.
type floor struct {
	pools            []*redis.Pool
	acquire, release *redis.Script
}

func newFloor(addrs []string) (*floor, error) {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "scripts")
	var src [3][]byte
	for i, name := range []string{"queue.lua", "acquire.lua", "release.lua"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		src[i] = b
	}
	// As the library does (scripts.go), the queue's functions come first;
	// the scripts take the lock key and the key's two queue sets.
	queue := string(src[0])
	f := &floor{acquire: redis.NewScript(3, queue+string(src[1])), release: redis.NewScript(3, queue+string(src[2]))}
	for _, a := range addrs {
		f.pools = append(f.pools, newPool(a))
	}
	return f, nil
}

// fanout runs script on every node and returns once a quorum said 1 (true)
// or cannot (false).
func (f *floor) fanout(s *redis.Script, args ...interface{}) bool {
	n := len(f.pools)
	q := n/2 + 1
	res := make(chan bool, n)
	for _, p := range f.pools {
		go func(p *redis.Pool) {
			c := p.Get()
			defer c.Close()
			v, err := s.Do(c, args...)
			if vals, isArr := v.([]interface{}); isArr && len(vals) > 0 {
				v = vals[0]
			}
			n, _ := redis.Int(v, err)
			res <- err == nil && n == 1
		}(p)
	}
	yes, no := 0, 0
	for yes < q && no <= n-q {
		if <-res {
			yes++
		} else {
			no++
		}
	}
	return yes >= q
}

func (f *floor) cycle(_ context.Context, key string) bool {
	token := fmt.Sprintf("%040x", time.Now().UnixNano())
	q, qx := key+":waiters", key+":waiters:expiry"
	// The arguments of a TryLock: no waiter, nothing queued behind (the
	// cap and grace are not used then).
	ok := f.fanout(f.acquire, key, q, qx, token, ttl.Milliseconds(), "", 0, 5000, 528, "", 0)
	f.fanout(f.release, key, q, qx, token, "redlock:released:"+key, "", "", 528)
	return ok
}

func (f *floor) lock(context.Context, string) (func(), bool) { return nil, false }

func (f *floor) close() {
	for _, p := range f.pools {
		p.Close()
	}
}
