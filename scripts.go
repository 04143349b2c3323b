package redlock

import (
	_ "embed" // for the Lua scripts
	"fmt"

	"github.com/gomodule/redigo/redis"
)

// The Lua scripts run atomically on each node. Keys and tokens are always
// passed as KEYS/ARGV, never spliced into the script text. redis.Script sends
// EVALSHA and falls back to EVAL on NOSCRIPT (a flushed or restarted node).

var (
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

	acquireScript = redis.NewScript(1, acquireSrc)
	extendScript  = redis.NewScript(1, extendSrc)
	releaseScript = redis.NewScript(1, releaseSrc)
	// The fencing scripts take the lock key and its counter (fence.go).
	acquireFencedScript = redis.NewScript(2, acquireFencedSrc)
	fenceScript         = redis.NewScript(2, fenceSrc)
)

// parseAcquire classifies the reply of the acquire script and of the fenced
// acquire script. On a refusal, val is the holder's remaining time in
// milliseconds (-1 when the key has no TTL); on a grant by the fenced script
// it is the node's fencing counter (positive), and 0 from the plain script.
func parseAcquire(reply interface{}) (v vote, val int64, err error) {
	vals, err := redis.Int64s(reply, nil)
	if err != nil {
		return voteFail, 0, fmt.Errorf("redlock: unexpected acquire reply: %w", err)
	}
	switch {
	case len(vals) == 1 && vals[0] == 1:
		return voteYes, 0, nil
	case len(vals) == 2 && vals[0] == 1 && vals[1] > 0:
		return voteYes, vals[1], nil
	case len(vals) == 2 && vals[0] == 0:
		return voteNo, vals[1], nil
	}
	return voteFail, 0, fmt.Errorf("redlock: unexpected acquire reply %v", vals)
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
