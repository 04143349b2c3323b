//go:build unix

package redlock

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
)

// peerClosed reports, without blocking and without consuming anything,
// whether the socket under nc (a TCP connection, or TLS over one), on which
// no command is outstanding, is unfit for the next one: the node closed it
// (an end of stream or a reset waiting to be read), or sent something
// unasked (over TLS, a close_notify before the end of stream). A quiet,
// open socket, or one it cannot inspect, is fit.
func peerClosed(nc net.Conn) error {
	if t, ok := nc.(*tls.Conn); ok {
		nc = t.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var closed error
	// Control, not Read: the socket's read deadline (the last command's,
	// long passed) must not fail the look, and nothing may block.
	err = rc.Control(func(fd uintptr) {
		var b [1]byte
		// Go's sockets are non-blocking: an open, quiet socket says EAGAIN.
		n, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK)
		switch {
		case rerr == nil && n == 0:
			closed = io.EOF
		case rerr == nil:
			closed = errors.New("unexpected data")
		case !errors.Is(rerr, syscall.EAGAIN) && !errors.Is(rerr, syscall.EINTR):
			closed = rerr
		}
	})
	if err != nil {
		return fmt.Errorf("%w: %w", errClosedWhileIdle, err) // the socket is closed on our side
	}
	if closed != nil {
		return fmt.Errorf("%w: %w", errClosedWhileIdle, closed)
	}
	return nil
}
