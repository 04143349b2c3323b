// The redlock command is a module of its own so that its dependencies
// (miniredis for the embedded demo nodes) stay out of the library's go.mod.
// In a clone it builds through the repository's go.work.
module github.com/redlockgo/redlock/cmd/redlock

go 1.22

require (
	github.com/alicebob/miniredis/v2 v2.40.0
	github.com/yuin/gopher-lua v1.1.1 // indirect
)
