// Package fakeredis runs deliberately broken Redis-like servers on
// 127.0.0.1 for hostile-input tests: a Handler decides, command by command,
// which raw bytes to send back, or to send nothing, or to hang up. It is not a
// Redis implementation and must never stand in for one in other tests.
package fakeredis

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
)

// Response is what the server does with one command.
type Response struct {
	Bytes []byte // written as is (may be garbage, truncated, anything)
	Hang  bool   // after writing Bytes, read and answer nothing more until Close
	Close bool   // after writing Bytes, close the connection
}

// Handler maps one command (its arguments as strings, the name first) to a
// Response. It is called from the connection's goroutine.
type Handler func(cmd []string) Response

// Server is one listening fake server.
type Server struct {
	Addr string

	ln   net.Listener
	h    Handler
	wg   sync.WaitGroup
	mu   sync.Mutex
	conn map[net.Conn]struct{}
	done chan struct{}
}

// Start starts a server with h and closes it with tb's cleanup.
func Start(tb testing.TB, h Handler) *Server {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("fakeredis: %v", err)
	}
	s := &Server{Addr: ln.Addr().String(), ln: ln, h: h, conn: make(map[net.Conn]struct{}), done: make(chan struct{})}
	s.wg.Add(1)
	go s.serve()
	tb.Cleanup(s.Close)
	return s
}

// Close stops listening, closes every connection and waits for the
// server's goroutines. It is idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	select {
	case <-s.done:
		s.mu.Unlock()
		return
	default:
	}
	close(s.done)
	s.ln.Close()
	for c := range s.conn {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		select {
		case <-s.done:
			s.mu.Unlock()
			c.Close()
			return
		default:
		}
		s.conn[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.handle(c)
	}
}

func (s *Server) handle(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conn, c)
		s.mu.Unlock()
		c.Close()
	}()
	r := bufio.NewReader(c)
	for {
		cmd, err := readCommand(r)
		if err != nil {
			// Unparsable input (e.g. a TLS ClientHello): say nothing, as a
			// hung peer would, until the client or Close hangs up.
			io.Copy(io.Discard, r)
			return
		}
		resp := s.h(cmd)
		if len(resp.Bytes) > 0 {
			if _, err := c.Write(resp.Bytes); err != nil {
				return
			}
		}
		switch {
		case resp.Close:
			return
		case resp.Hang:
			io.Copy(io.Discard, r)
			return
		}
	}
}

// readCommand reads one RESP array of bulk strings, as clients send them.
func readCommand(r *bufio.Reader) ([]string, error) {
	n, err := readHeader(r, '*')
	if err != nil {
		return nil, err
	}
	if n < 1 || n > 1024 {
		return nil, fmt.Errorf("bad command length %d", n)
	}
	cmd := make([]string, n)
	for i := range cmd {
		l, err := readHeader(r, '$')
		if err != nil {
			return nil, err
		}
		if l < 0 || l > 1<<20 {
			return nil, fmt.Errorf("bad argument length %d", l)
		}
		b := make([]byte, l+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, err
		}
		cmd[i] = string(b[:l])
	}
	return cmd, nil
}

func readHeader(r *bufio.Reader, typ byte) (int, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if len(line) < 4 || line[0] != typ || line[len(line)-2] != '\r' {
		return 0, fmt.Errorf("bad header %q", line)
	}
	return strconv.Atoi(line[1 : len(line)-2])
}

// Info is a minimal INFO reply for a master with the given run_id, so that
// first contact succeeds and the client goes on to send its scripts.
func Info(runID string) []byte {
	body := "# Server\r\nrun_id:" + runID + "\r\n# Replication\r\nrole:master\r\n# Memory\r\nmaxmemory_policy:noeviction\r\n"
	return []byte(fmt.Sprintf("$%d\r\n%s\r\n", len(body), body))
}
