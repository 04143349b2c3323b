package main

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/redlockgo/redlock/internal/redistest"
)

// embeddedNode is one local Redis node started by the command itself.
type embeddedNode interface {
	Addr() string
	// Crash stops the node abruptly; its data is lost, connections are refused.
	Crash()
	// Restart starts an empty node on the same address.
	Restart() error
	Close()
}

// Embedded node kinds.
const (
	kindAuto        = "auto"         // redis-server when on PATH, else miniredis
	kindRedisServer = "redis-server" // real processes
	kindMiniredis   = "miniredis"    // in-process
)

// startEmbedded starts n local nodes of the given kind and describes them.
func startEmbedded(kind string, n int) ([]embeddedNode, string, error) {
	if kind == kindAuto {
		kind = kindMiniredis
		if _, err := exec.LookPath("redis-server"); err == nil {
			kind = kindRedisServer
		}
	}
	nodes := make([]embeddedNode, 0, n)
	fail := func(err error) ([]embeddedNode, string, error) {
		for _, nd := range nodes {
			nd.Close()
		}
		return nil, "", err
	}
	var desc string
	switch kind {
	case kindRedisServer:
		out, _ := exec.Command("redis-server", "--version").Output()
		desc = "redis-server processes"
		if f := strings.Fields(string(out)); len(f) >= 3 {
			desc = fmt.Sprintf("redis-server %s processes", strings.TrimPrefix(f[2], "v="))
		}
		for i := 0; i < n; i++ {
			s, err := redistest.NewServer()
			if err != nil {
				return fail(err)
			}
			nodes = append(nodes, &processNode{s})
		}
	case kindMiniredis:
		desc = "in-process miniredis nodes (no redis-server on PATH)"
		for i := 0; i < n; i++ {
			m, err := newMiniNode("127.0.0.1:0")
			if err != nil {
				return fail(err)
			}
			nodes = append(nodes, m)
		}
	default:
		return nil, "", fmt.Errorf("unknown node kind %q (want %s, %s or %s)", kind, kindAuto, kindRedisServer, kindMiniredis)
	}
	return nodes, desc, nil
}

// processNode is a real redis-server process without persistence.
type processNode struct{ s *redistest.Server }

func (p *processNode) Addr() string   { return p.s.Addr }
func (p *processNode) Crash()         { p.s.Kill() }
func (p *processNode) Restart() error { return p.s.Restart() }
func (p *processNode) Close()         { p.s.Close() }

// miniNode is an in-process miniredis server. miniredis only advances TTLs
// when told to, so a driver goroutine fast-forwards it in real time; and its
// own Restart keeps the data, unlike a crashed redis-server, so a crash is
// modelled as closing it and restarting means a fresh, empty server on the
// same address.
type miniNode struct {
	addr string

	mu   sync.Mutex
	m    *miniredis.Miniredis
	stop chan struct{}
	done chan struct{}
}

func newMiniNode(addr string) (*miniNode, error) {
	n := &miniNode{}
	if err := n.start(addr); err != nil {
		return nil, err
	}
	return n, nil
}

func (n *miniNode) start(addr string) error {
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr(addr); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.m, n.addr = m, m.Addr()
	n.stop, n.done = make(chan struct{}), make(chan struct{})
	go drive(m, n.stop, n.done)
	return nil
}

// drive advances the server's clock with the real one, so that keys expire
// on time (checked by TestMiniNodeExpiresInRealTime).
func drive(m *miniredis.Miniredis, stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			m.SetTime(now)
			m.FastForward(now.Sub(last))
			last = now
		}
	}
}

func (n *miniNode) Addr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.addr
}

func (n *miniNode) Crash() {
	n.mu.Lock()
	m, stop, done := n.m, n.stop, n.done
	n.m = nil
	n.mu.Unlock()
	if m == nil {
		return
	}
	close(stop)
	<-done
	m.Close()
}

func (n *miniNode) Restart() error {
	n.Crash()
	return n.start(n.Addr())
}

func (n *miniNode) Close() { n.Crash() }

// closeNodes stops the embedded nodes.
func closeNodes(nodes []embeddedNode) {
	for _, n := range nodes {
		n.Close()
	}
}

// nodeAddrs returns the nodes' host:port addresses.
func nodeAddrs(nodes []embeddedNode) []string {
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}
