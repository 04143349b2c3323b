// Package redistest starts real redis-server processes for tests, on free
// loopback ports and without persistence, and injects process-level faults:
// Kill (SIGKILL: connections refused, data gone), Pause (SIGSTOP: connects but
// never answers), Resume (SIGCONT) and Restart (a fresh, empty process on the
// same port, as after a crash without persistence).
//
// Processes are killed by the test's cleanup and, on Linux, by the kernel if
// the test binary dies. When redis-server is not installed the helpers fail
// the test with an install hint: tests never skip for want of a server.
package redistest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// InstallHint tells how to get redis-server.
const InstallHint = "redis-server not found on PATH: run `make test` (it installs it) or `apt-get install -y redis-server`"

// Binary returns the path of redis-server or an error carrying InstallHint.
func Binary() (string, error) {
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return "", errors.New(InstallHint)
	}
	return p, nil
}

// Server is one redis-server process.
type Server struct {
	Addr string // 127.0.0.1:port
	Port int
	args []string
	tls  *TLS     // nil: plaintext
	env  []string // added to the test's environment

	mu     sync.Mutex
	cmd    *exec.Cmd
	out    *syncBuffer
	paused bool
}

// Start starts n servers and registers their cleanup with tb. It fails tb
// if redis-server is missing or does not start.
func Start(tb testing.TB, n int, extraArgs ...string) []*Server {
	tb.Helper()
	servers := make([]*Server, n)
	for i := range servers {
		s, err := NewServer(extraArgs...)
		if err != nil {
			tb.Fatalf("redistest: %v", err)
		}
		tb.Cleanup(s.Close)
		servers[i] = s
	}
	return servers
}

// StartTLS is Start for servers that accept only TLS connections, set up by t
// (see Certs.ServerTLS). Conn and Do connect with t.Client.
func StartTLS(tb testing.TB, n int, t *TLS, extraArgs ...string) []*Server {
	tb.Helper()
	servers := make([]*Server, n)
	for i := range servers {
		s, err := NewTLSServer(t, extraArgs...)
		if err != nil {
			tb.Fatalf("redistest: %v", err)
		}
		tb.Cleanup(s.Close)
		servers[i] = s
	}
	return servers
}

// NewServer starts one server on a free loopback port. The caller must
// Close it (Start does so through the test's cleanup).
func NewServer(extraArgs ...string) (*Server, error) {
	return newServer(nil, nil, extraArgs)
}

// NewServerEnv is NewServer with extra environment entries for the process
// (and its restarts), e.g. LD_PRELOAD for a clock shim.
func NewServerEnv(env []string, extraArgs ...string) (*Server, error) {
	return newServer(nil, env, extraArgs)
}

// NewTLSServer is NewServer for a server that accepts only TLS connections
// (--port 0, --tls-port on the free port); its readiness check connects over
// TLS with t.Client.
func NewTLSServer(t *TLS, extraArgs ...string) (*Server, error) {
	if t == nil || t.Client == nil {
		return nil, errors.New("NewTLSServer: want a TLS setup with a client configuration")
	}
	return newServer(t, nil, extraArgs)
}

func newServer(t *TLS, env []string, extraArgs []string) (*Server, error) {
	if _, err := Binary(); err != nil {
		return nil, err
	}
	var lastErr error
	for try := 0; try < 5; try++ { // a free port can be taken between probe and bind
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Port: port, args: extraArgs, tls: t, env: env}
		if lastErr = s.start(); lastErr == nil {
			return s, nil
		}
	}
	return nil, lastErr
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start launches the process and waits until it answers PING.
func (s *Server) start() error {
	bin, err := Binary()
	if err != nil {
		return err
	}
	listen := []string{"--port", strconv.Itoa(s.Port)}
	if s.tls != nil {
		listen = s.tls.args(s.Port)
	}
	args := append(append(listen,
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--dir", os.TempDir(),
		"--loglevel", "warning",
	), s.args...)
	cmd := exec.Command(bin, args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = procAttr()
	if len(s.env) > 0 {
		cmd.Env = append(os.Environ(), s.env...)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := s.ping(); err == nil {
			// The port was free when probed, but another process (a test
			// package running in parallel) may have bound it since: then
			// our server fails to bind and exits, and the answer came from
			// theirs. Sharing it would mix two tests' keys.
			if err := s.answeredBy(cmd.Process.Pid); err != nil {
				cmd.Process.Kill()
				<-exited
				return err
			}
			break
		}
		select {
		case <-exited:
			return fmt.Errorf("redis-server on port %d exited at start: %s", s.Port, out.String())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			return fmt.Errorf("redis-server on port %d did not answer within 10s: %s", s.Port, out.String())
		}
	}
	s.mu.Lock()
	s.cmd, s.out, s.paused = cmd, out, false
	s.mu.Unlock()
	return nil
}

// answeredBy checks that the server answering on the port is the process
// pid (INFO's process_id). A server that refuses INFO (authentication, ACL)
// or does not report it is not judged.
func (s *Server) answeredBy(pid int) error {
	c, err := s.dial(time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	info, err := redis.String(c.Do("INFO", "server"))
	if err != nil {
		var re redis.Error
		if errors.As(err, &re) {
			return nil
		}
		return err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok && v != strconv.Itoa(pid) {
			return fmt.Errorf("port %d answered by another redis-server (pid %s, ours %d)", s.Port, v, pid)
		}
	}
	return nil
}

// ping checks that the server answers, over TLS for a TLS server.
func (s *Server) ping() error {
	c, err := s.dial(time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Do("PING")
	var re redis.Error
	if errors.As(err, &re) { // e.g. NOAUTH: the server is up and answering
		return nil
	}
	return err
}

// signal sends sig to the running process, if any.
func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.cmd.Process.Signal(sig)
	}
}

// Kill sends SIGKILL and waits until the port refuses connections.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd, s.paused = nil, false
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	for i := 0; i < 1000; i++ {
		c, err := net.DialTimeout("tcp", s.Addr, 100*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(time.Millisecond)
	}
}

// Pause stops the process with SIGSTOP: it still accepts TCP connections (the
// kernel does) but answers nothing until Resume.
func (s *Server) Pause() {
	s.signal(syscall.SIGSTOP)
	s.mu.Lock()
	s.paused = s.cmd != nil
	s.mu.Unlock()
}

// Resume continues a paused process with SIGCONT.
func (s *Server) Resume() {
	s.signal(syscall.SIGCONT)
	s.mu.Lock()
	s.paused = false
	s.mu.Unlock()
}

// Restart kills the process and starts a fresh, empty one on the same port:
// a crash without persistence and an immediate restart.
func (s *Server) Restart() error {
	s.Kill()
	return s.start()
}

// Running reports whether the process is up (possibly paused).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// Close kills the process. It is idempotent.
func (s *Server) Close() {
	s.Resume()
	s.Kill()
}

// Conn dials a direct connection to the server with 2-second timeouts (over
// TLS for a TLS server), for test assertions outside the library under test.
func (s *Server) Conn() (redis.Conn, error) {
	return s.dial(2 * time.Second)
}

func (s *Server) dial(timeout time.Duration) (redis.Conn, error) {
	opts := []redis.DialOption{redis.DialConnectTimeout(timeout),
		redis.DialReadTimeout(timeout), redis.DialWriteTimeout(timeout),
		redis.DialTLSHandshakeTimeout(timeout)}
	if s.tls != nil {
		opts = append(opts, redis.DialUseTLS(true), redis.DialTLSConfig(s.tls.Client))
	}
	return redis.Dial("tcp", s.Addr, opts...)
}

// Do runs one command on a fresh direct connection.
func (s *Server) Do(cmd string, args ...interface{}) (interface{}, error) {
	c, err := s.Conn()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Do(cmd, args...)
}

// syncBuffer collects process output; exec writes it from its own goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Output returns what the process has written to stdout and stderr.
func (s *Server) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out == nil {
		return ""
	}
	return s.out.String()
}

// Addrs returns the servers' host:port addresses.
func Addrs(servers []*Server) []string {
	a := make([]string, len(servers))
	for i, s := range servers {
		a[i] = s.Addr
	}
	return a
}
