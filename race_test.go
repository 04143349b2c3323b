//go:build race

package redlock

// raceEnabled reports whether the tests run under the race detector.
const raceEnabled = true
