package redistest

import (
	"strings"
	"testing"
)

// A server started on a port another redis-server has bound meanwhile (the
// free-port probe races with parallel test packages) is refused, not
// mistaken for that other server, whose answers the readiness check sees.
func TestStartRefusesAPortAnsweredByAnother(t *testing.T) {
	other := Start(t, 1)[0]
	s := &Server{Addr: other.Addr, Port: other.Port}
	err := s.start()
	if err == nil {
		s.Kill()
		t.Fatal("start on a port another redis-server holds succeeded: the test would share that server")
	}
	if !strings.Contains(err.Error(), "another redis-server") && !strings.Contains(err.Error(), "exited at start") {
		t.Fatalf("start on a taken port: %v; want it refused as another server's", err)
	}
	if _, err := other.Do("PING"); err != nil {
		t.Fatalf("the other server was harmed: %v", err)
	}
}
