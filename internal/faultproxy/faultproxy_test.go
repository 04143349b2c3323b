package faultproxy

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo starts a line echo server and returns its address.
func echo(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(c net.Conn, timeout time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

func TestProxyModes(t *testing.T) {
	p, err := New(echo(t))
	require.NoError(t, err)
	defer p.Close()

	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c.Close()
	got, err := roundTrip(c, 2*time.Second)
	require.NoError(t, err)
	assert.Equal(t, "ping\n", got)

	p.Delay(50 * time.Millisecond)
	start := time.Now()
	_, err = roundTrip(c, 2*time.Second)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond, "delayed both ways")
	p.Heal()

	p.Blackhole()
	_, err = roundTrip(c, 100*time.Millisecond)
	require.Error(t, err, "a blackholed connection never answers")
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout())
	p.Heal()

	c2, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c2.Close()
	_, err = roundTrip(c2, 2*time.Second)
	require.NoError(t, err, "healed: new connections work")

	p.Reset()
	_, err = roundTrip(c2, 2*time.Second)
	assert.Error(t, err, "existing connections are reset")
	c3, err := net.Dial("tcp", p.Addr())
	if err == nil { // the kernel accepts before the proxy resets
		_, err = roundTrip(c3, 2*time.Second)
		c3.Close()
	}
	assert.Error(t, err, "new connections are reset")
	p.Heal()
	require.NoError(t, p.Close())
	require.NoError(t, p.Close(), "idempotent")
}
