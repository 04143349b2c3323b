// The benchmark module compares redlock with its peers on the same local
// nodes. It is a module of its own so that the peers' dependencies stay out
// of the library's go.mod; in a clone it builds through the repository's go.work.
module github.com/redlockgo/redlock/bench

go 1.22

require (
	github.com/go-redsync/redsync/v4 v4.18.1
	github.com/gomodule/redigo v1.9.3
)
