package redlock

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gomodule/redigo/redis"
)

// simNode is an in-memory Redis node that runs the library's scripts, for the
// deterministic simulation (fence_sim_test.go). It implements exactly the
// commands our scripts use, with Redis's semantics: keys with a PX expire
// when the node's clock has passed their deadline (Redis: now > when, in
// milliseconds); TIME reads the node's clock. TestSimNodeMatchesRedis checks
// it answers as the real scripts do on redis-server.
type simNode struct {
	now    func() time.Time // the node's wall clock
	keys   map[string]simEntry
	broken bool // run the broken fencing variant: INCR and max, no conditional write-back
}

type simEntry struct {
	val string
	exp int64 // expiry deadline in Unix ms; 0: none
}

func newSimNode(now func() time.Time) *simNode {
	return &simNode{now: now, keys: map[string]simEntry{}}
}

func (s *simNode) ms() int64 { return s.now().UnixMilli() }

// get returns the key's value, expiring it lazily like Redis.
func (s *simNode) get(k string) (string, bool) {
	e, ok := s.keys[k]
	if ok && e.exp != 0 && s.ms() > e.exp {
		delete(s.keys, k)
		return "", false
	}
	return e.val, ok
}

func (s *simNode) setPX(k, v string, px int64) { s.keys[k] = simEntry{val: v, exp: s.ms() + px} }

func (s *simNode) pexpire(k string, px int64) {
	if e, ok := s.keys[k]; ok {
		e.exp = s.ms() + px
		s.keys[k] = e
	}
}

func (s *simNode) pttl(k string) int64 {
	if _, ok := s.get(k); !ok {
		return -2
	}
	e := s.keys[k]
	if e.exp == 0 {
		return -1
	}
	return e.exp - s.ms()
}

// timeUS is TIME in microseconds.
func (s *simNode) timeUS() int64 { return s.now().UnixMicro() }

// lose empties the node: a restart without persistence.
func (s *simNode) lose() { s.keys = map[string]simEntry{} }

var errSimNotNumber = redis.Error("ERR redlock: fencing counter is not a number")

// errSimQueue: the simulation drives TryLock-style attempts only; the queue
// of waiting Lock calls (scripts/queue.lua) is not modelled.
var errSimQueue = errors.New("simNode: the queue of waiters is not modelled")

// counter reads a fencing counter as the scripts do: ok false if absent.
func (s *simNode) counter(k string) (c int64, ok bool, err error) {
	v, ok := s.get(k)
	if !ok {
		return 0, false, nil
	}
	c, err = strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, true, errSimNotNumber
	}
	return c, true, nil
}

// run executes one of the library's scripts with redigo's argument layout
// (keys first, then arguments) and returns the reply as redigo would.
func (s *simNode) run(script *script, keysAndArgs ...interface{}) (interface{}, error) {
	a := make([]string, len(keysAndArgs))
	for i, x := range keysAndArgs {
		a[i] = fmt.Sprint(x)
	}
	num := func(i int) int64 {
		n, err := strconv.ParseInt(a[i], 10, 64)
		if err != nil {
			panic(fmt.Sprintf("simNode: argument %d %q is not an integer", i, a[i]))
		}
		return n
	}
	switch script {
	case acquireScript: // KEYS: lock, waiters, expiries; ARGV: token, ttl, waiter id, rank, cap, grace, next id, next rank
		if a[5] != "" || a[9] != "" {
			return nil, errSimQueue
		}
		v, ok := s.get(a[0])
		switch {
		case !ok:
			s.setPX(a[0], a[3], num(4))
			return []interface{}{int64(1)}, nil
		case v == a[3]:
			s.pexpire(a[0], num(4))
			return []interface{}{int64(1)}, nil
		}
		return []interface{}{int64(0), s.pttl(a[0]), []byte(v)}, nil

	case extendScript: // numkeys, KEYS: locks; ARGV: token and ttl per lock
		n := int(num(0))
		out := make([]interface{}, n)
		for i := 0; i < n; i++ {
			key, tok, ttl := a[1+i], a[1+n+2*i], num(2+n+2*i)
			out[i] = int64(0)
			if v, ok := s.get(key); ok && v == tok {
				if p := s.pttl(key); p >= 0 && p < ttl {
					s.pexpire(key, ttl)
				}
				out[i] = int64(1)
			}
		}
		return out, nil

	case releaseScript: // KEYS: lock, waiters, expiries; ARGV: token, channel, waiter id, heir... (PUBLISH is not modelled)
		if len(a) > 6 && a[6] != "" { // a handoff to a waiting Lock: queues are not modelled
			return nil, errSimQueue
		}
		if v, ok := s.get(a[0]); ok && v == a[3] {
			delete(s.keys, a[0])
			return int64(1), nil
		}
		return int64(0), nil

	case acquireFencedScript: // KEYS: lock, counter, waiters, expiries; ARGV: token, ttl, lifetime, waiter id, rank, cap, grace, next id, next rank
		if a[7] != "" || a[11] != "" {
			return nil, errSimQueue
		}
		v, ok := s.get(a[0])
		if ok && v != a[4] {
			return []interface{}{int64(0), s.pttl(a[0]), []byte(v)}, nil
		}
		c, _, err := s.counter(a[1])
		if err != nil {
			return nil, err
		}
		if !ok {
			s.setPX(a[0], a[4], num(5))
		} else {
			s.pexpire(a[0], num(5))
		}
		if s.broken { // the NOTES' trap: INCR on each node, no seed, no write-back
			c++
			s.keys[a[1]] = simEntry{val: strconv.FormatInt(c, 10)}
			return []interface{}{int64(1), c}, nil
		}
		c = max(c, s.timeUS())
		s.setPX(a[1], strconv.FormatInt(c, 10), num(6))
		return []interface{}{int64(1), c}, nil

	case fenceScript: // KEYS: lock, counter; ARGV: token, T, lifetime
		if s.broken {
			return int64(1), nil
		}
		if v, ok := s.get(a[0]); !ok || v != a[2] {
			return int64(0), nil
		}
		c, ok, err := s.counter(a[1])
		if err != nil {
			return nil, err
		}
		if !ok {
			c = s.timeUS()
		}
		if c >= num(3) {
			return int64(0), nil
		}
		s.setPX(a[1], a[3], num(4))
		return int64(1), nil
	}
	return nil, errors.New("simNode: unknown script")
}
