package redlock

import (
	_ "embed" // for the Lua scripts
	"fmt"

	"github.com/gomodule/redigo/redis"
)

// The Lua scripts run atomically on each node. Keys and tokens are always
// passed as KEYS/ARGV, never spliced into the script text. Without
// pipelining, redis.Script sends EVALSHA and falls back to EVAL on NOSCRIPT
// (a flushed or restarted node); the pipelined transport sends EVAL first
// on each connection and falls back only where that keeps the connection's
// order (pipe.sendScript).

var (
	//go:embed scripts/queue.lua
	queueSrc string // prepended to the acquire and release scripts
	//go:embed scripts/acquire.lua
	acquireSrc string
	//go:embed scripts/extend.lua
	extendSrc string
	//go:embed scripts/release.lua
	releaseSrc string
	//go:embed scripts/acquire_fenced.lua
	acquireFencedSrc string
	//go:embed scripts/fence.lua
	fenceSrc string

	// The acquire and release scripts take the lock key and its queue of
	// waiters (two keys, wait.go); the fencing scripts the lock key and its
	// counter (fence.go), and the fenced acquire both.
	acquireScript       = newScript(3, queueSrc+acquireSrc)
	extendScript        = newScript(-1, extendSrc) // any number of keys; the count comes first
	releaseScript       = newScript(3, queueSrc+releaseSrc)
	acquireFencedScript = newScript(4, queueSrc+acquireFencedSrc)
	fenceScript         = newScript(2, fenceSrc)
)

// script is a Lua script with what the transports need to send it:
// redis.Script for the pool transport (EVALSHA with EVAL fallback), and its
// source and key count for the pipelined one.
type script struct {
	*redis.Script
	src  string
	keys int
	hash interface{} // the SHA1 hex digest, boxed once
}

func newScript(keys int, src string) *script {
	s := redis.NewScript(keys, src)
	return &script{Script: s, src: src, keys: keys, hash: s.Hash()}
}

// args returns the arguments of EVALSHA (or, with the source in place of
// the hash, EVAL): hash, number of keys, keys and arguments.
func (s *script) args(keysAndArgs ...interface{}) []interface{} {
	if s.keys < 0 { // the caller supplies the number of keys
		return append([]interface{}{s.hash}, keysAndArgs...)
	}
	a := make([]interface{}, 2+len(keysAndArgs))
	a[0], a[1] = s.hash, s.keys
	copy(a[2:], keysAndArgs)
	return a
}

// keysAndArgs returns the part of EVALSHA's arguments (from args) that
// redis.Script takes.
func (s *script) keysAndArgs(args []interface{}) []interface{} {
	if s.keys < 0 {
		return args[1:]
	}
	return args[2:]
}

// parseAcquire classifies the reply of the acquire script and of the fenced
// acquire script. On a refusal, val is how long in milliseconds the caller
// may have to wait (the holder's remaining time, -1 when the key has no TTL)
// and holder the token holding the key ("" if the key is free but kept for a
// waiter ranked first); on a grant by the fenced script val is the node's
// fencing counter (positive), and 0 from the plain script.
func parseAcquire(reply interface{}) (v vote, val int64, holder string, err error) {
	// The script's own replies, read without redis.Values and Scan (which
	// allocate): integers are int64 and strings []byte as redigo reads them.
	if vals, ok := reply.([]interface{}); ok {
		flag, _ := intAt(vals, 0)
		switch {
		case len(vals) == 1 && flag == 1:
			return voteYes, 0, "", nil
		case len(vals) == 2 && flag == 1:
			if n, ok := intAt(vals, 1); ok && n > 0 {
				return voteYes, n, "", nil
			}
		case len(vals) == 3 && flag == 0:
			n, ok := intAt(vals, 1)
			if b, isBytes := vals[2].([]byte); ok && isBytes {
				return voteNo, n, string(b), nil
			}
		}
	}
	return parseAcquireSlow(reply)
}

// intAt returns vals[i] if it is an integer reply.
func intAt(vals []interface{}, i int) (int64, bool) {
	if i >= len(vals) {
		return 0, false
	}
	n, ok := vals[i].(int64)
	return n, ok
}

// parseAcquireSlow is parseAcquire for replies of unexpected form: it
// accepts what redis.Scan converts and explains what it does not.
func parseAcquireSlow(reply interface{}) (v vote, val int64, holder string, err error) {
	vals, err := redis.Values(reply, nil)
	if err != nil {
		return voteFail, 0, "", fmt.Errorf("redlock: unexpected acquire reply: %w", err)
	}
	var flag int64
	switch {
	case len(vals) == 1:
		if _, err = redis.Scan(vals, &flag); err == nil && flag == 1 {
			return voteYes, 0, "", nil
		}
	case len(vals) == 2:
		if _, err = redis.Scan(vals, &flag, &val); err == nil && flag == 1 && val > 0 {
			return voteYes, val, "", nil
		}
	case len(vals) == 3:
		if _, err = redis.Scan(vals, &flag, &val, &holder); err == nil && flag == 0 {
			return voteNo, val, holder, nil
		}
	}
	if err != nil {
		return voteFail, 0, "", fmt.Errorf("redlock: unexpected acquire reply: %w", err)
	}
	return voteFail, 0, "", fmt.Errorf("redlock: unexpected acquire reply %v", vals)
}

// parseFlag classifies the 0/1 reply of the extend and release scripts.
func parseFlag(script string, reply interface{}) (vote, error) {
	n, err := redis.Int64(reply, nil)
	switch {
	case err != nil:
		return voteFail, fmt.Errorf("redlock: unexpected %s reply: %w", script, err)
	case n == 1:
		return voteYes, nil
	case n == 0:
		return voteNo, nil
	}
	return voteFail, fmt.Errorf("redlock: unexpected %s reply %d", script, n)
}

// parseFlags classifies the extend script's reply: one 0/1 flag per key sent.
func parseFlags(script string, reply interface{}, want int) ([]vote, error) {
	vals, err := redis.Int64s(reply, nil)
	if err != nil {
		return nil, fmt.Errorf("redlock: unexpected %s reply: %w", script, err)
	}
	if len(vals) != want {
		return nil, fmt.Errorf("redlock: unexpected %s reply: %d flags for %d keys", script, len(vals), want)
	}
	votes := make([]vote, want)
	for i, n := range vals {
		switch n {
		case 1:
			votes[i] = voteYes
		case 0:
			votes[i] = voteNo
		default:
			return nil, fmt.Errorf("redlock: unexpected %s reply: flag %d", script, n)
		}
	}
	return votes, nil
}
