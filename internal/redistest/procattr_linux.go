package redistest

import "syscall"

// procAttr makes the kernel kill the server when the test binary dies, so
// that no redis-server outlives a crashed or interrupted test run.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
