// Package faketime builds and drives the chaos suite's LD_PRELOAD clock
// shim (chaos/faketime/shim.c), which offsets and scales a C program's wall
// clock while it runs. It works on redis-server, where libfaketime hangs; it
// has no effect on Go programs, whose clock faults go through the library's
// clock seam instead.
package faketime

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"time"
)

// Source returns the path of shim.c in this repository.
func Source() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("faketime: cannot locate the source tree")
	}
	src := filepath.Join(filepath.Dir(file), "..", "..", "chaos", "faketime", "shim.c")
	if _, err := os.Stat(src); err != nil {
		return "", fmt.Errorf("faketime: shim source: %w", err)
	}
	return src, nil
}

// Build compiles the shim with gcc into dir and returns the library's path.
// The error says why when gcc is missing or fails, so that callers can skip
// with a clear message.
func Build(dir string) (string, error) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		return "", errors.New("faketime: gcc not found on PATH (apt-get install -y gcc): the clock shim is built from C")
	}
	src, err := Source()
	if err != nil {
		return "", err
	}
	lib := filepath.Join(dir, "faketime-shim.so")
	out, err := exec.Command(gcc, "-shared", "-fPIC", "-O2", "-o", lib, src, "-ldl").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("faketime: gcc failed: %v: %s", err, out)
	}
	return lib, nil
}

// Control is the control block of one shimmed process. It is safe for
// concurrent use.
type Control struct {
	path string

	mu         sync.Mutex
	f          *os.File
	anchorReal int64 // ns
	anchorFake int64 // ns
	rate       float64
	seq        uint64
}

// NewControl creates the control file at path, starting with no fault.
func NewControl(path string) (*Control, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	c := &Control{path: path, f: f}
	if err := c.write(); err != nil {
		f.Close()
		return nil, err
	}
	return c, nil
}

// Env returns the environment entries that load the shim from lib and
// connect it to this control block.
func (c *Control) Env(lib string) []string {
	return []string{"LD_PRELOAD=" + lib, "FAKETIME_SHIM_CTL=" + c.path}
}

// now returns the fake wall time at real wall time real. The caller holds mu.
func (c *Control) now(real int64) int64 {
	if c.rate == 0 {
		return real
	}
	return c.anchorFake + int64(float64(real-c.anchorReal)*c.rate)
}

// SetRate makes the process's wall clock run at rate fake seconds per real
// second from now on, without a jump (1 is the real rate).
func (c *Control) SetRate(rate float64) error {
	if !(rate > 0) || math.IsInf(rate, 0) {
		return fmt.Errorf("faketime: rate %v: want a positive finite number", rate)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	real := time.Now().UnixNano()
	c.anchorFake, c.anchorReal = c.now(real), real
	c.rate = rate
	return c.write()
}

// Jump steps the process's wall clock by d (forward if positive) at once.
func (c *Control) Jump(d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	real := time.Now().UnixNano()
	c.anchorFake, c.anchorReal = c.now(real)+int64(d), real
	if c.rate == 0 {
		c.rate = 1
	}
	return c.write()
}

// write publishes the block: seq odd, fields, seq even, so that the shim
// never reads a half-written block.
func (c *Control) write() error {
	var b [32]byte
	c.seq++
	binary.LittleEndian.PutUint64(b[24:], c.seq)
	if _, err := c.f.WriteAt(b[24:], 24); err != nil {
		return err
	}
	binary.LittleEndian.PutUint64(b[0:], uint64(c.anchorReal))
	binary.LittleEndian.PutUint64(b[8:], uint64(c.anchorFake))
	binary.LittleEndian.PutUint64(b[16:], math.Float64bits(c.rate))
	if _, err := c.f.WriteAt(b[:24], 0); err != nil {
		return err
	}
	c.seq++
	binary.LittleEndian.PutUint64(b[24:], c.seq)
	_, err := c.f.WriteAt(b[24:], 24)
	return err
}

// Close closes the control file (the shimmed process keeps its mapping).
func (c *Control) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.f.Close()
}
