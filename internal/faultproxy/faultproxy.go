// Package faultproxy is a small in-process TCP proxy for fault injection in
// tests: put one in front of a server and make it blackhole, delay or reset
// the traffic while the test runs. It listens on a free loopback port.
//
// A Proxy is safe for concurrent use. Close stops it and waits for its
// goroutines.
package faultproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// mode is what the proxy does with the bytes it reads.
type mode uint8

const (
	pass      mode = iota // forward
	blackhole             // hold: the peer sees silence, as behind a partition; TCP delivers the bytes after it heals
	reset                 // close every connection with RST and refuse new ones the same way
)

// Proxy forwards TCP connections from Addr to a target address.
type Proxy struct {
	target string
	ln     net.Listener

	mu    sync.Mutex
	mode  mode
	delay time.Duration
	links map[*link]struct{}
	done  bool

	wg sync.WaitGroup
}

// link is one proxied connection pair.
type link struct {
	client, server net.Conn
	once           sync.Once
	gone           chan struct{} // closed by close
}

func (l *link) close(rst bool) {
	l.once.Do(func() {
		close(l.gone)
		if rst {
			abort(l.client)
			abort(l.server)
		}
		l.client.Close()
		l.server.Close()
	})
}

// closed reports whether the link was closed (by a peer, Reset or Close).
func (l *link) closed() bool {
	select {
	case <-l.gone:
		return true
	default:
		return false
	}
}

// current returns the proxy's mode and delay.
func (p *Proxy) current() (mode, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.delay
}

// abort makes the next Close send RST instead of FIN.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
}

// New starts a proxy to target on a free 127.0.0.1 port.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, ln: ln, links: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the address clients should dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.mu.Lock()
		m, done := p.mode, p.done
		p.mu.Unlock()
		if m == reset || done {
			abort(c)
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve dials the target for one client connection and pumps both ways.
// While the proxy blackholes, the dial is still made (the target is up) but
// nothing is forwarded.
func (p *Proxy) serve(c net.Conn) {
	defer p.wg.Done()
	s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		abort(c)
		c.Close()
		return
	}
	l := &link{client: c, server: s, gone: make(chan struct{})}
	p.mu.Lock()
	if p.done {
		p.mu.Unlock()
		l.close(true)
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pump(l, c, s) }()
	go func() { defer wg.Done(); p.pump(l, s, c) }()
	wg.Wait()
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// pump copies src to dst chunk by chunk, applying the current mode to each.
func (p *Proxy) pump(l *link, src, dst net.Conn) {
	defer l.close(false)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			m, d := p.current()
			for m == blackhole {
				// Hold the bytes, as TCP retransmits across a partition:
				// they arrive in order once it heals, or the connection
				// breaks. Dropping them and carrying on would cut holes in
				// the stream, which no TCP connection can do (and which
				// would shift a pipelined client's replies).
				time.Sleep(time.Millisecond)
				if l.closed() {
					return
				}
				m, d = p.current()
			}
			switch m {
			case reset:
				l.close(true)
				return
			}
			if d > 0 {
				time.Sleep(d)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				l.close(true)
			}
			return
		}
	}
}

// Blackhole makes the proxy hold all bytes in both directions, on existing
// and new connections, until Heal: the peers see a silent network. Held bytes
// are delivered in order after Heal, as TCP retransmission would (so a
// command sent into a partition may still run after it heals), unless a peer
// or Reset closes the connection first.
func (p *Proxy) Blackhole() { p.set(blackhole) }

// Reset closes every current connection with RST and resets new ones at
// once, until Heal: the peers see a refused or broken connection.
func (p *Proxy) Reset() {
	p.set(reset)
	p.mu.Lock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		l.close(true)
	}
}

// Delay adds d of latency to every chunk forwarded in either direction
// (0 removes it). It does not change the mode.
func (p *Proxy) Delay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Heal returns to plain forwarding without delay. Connections broken by
// Reset stay broken; blackholed connections resume with the bytes they held.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.mode, p.delay = pass, 0
	p.mu.Unlock()
}

func (p *Proxy) set(m mode) {
	p.mu.Lock()
	p.mode = m
	p.mu.Unlock()
}

// Close stops accepting, closes every connection and waits for the
// proxy's goroutines. It is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.done {
		p.mu.Unlock()
		return nil
	}
	p.done = true
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	err := p.ln.Close()
	for _, l := range links {
		l.close(false)
	}
	p.wg.Wait()
	return err
}
