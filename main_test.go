package redlock_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/redlockgo/redlock/internal/redistest"
	"go.uber.org/goleak"
)

// exampleNodes are five real redis-server processes shared by the examples.
var exampleNodes []string

func TestMain(m *testing.M) {
	var servers []*redistest.Server
	for i := 0; i < 5; i++ {
		s, err := redistest.NewServer()
		if err != nil {
			fmt.Fprintln(os.Stderr, "redlock tests:", err)
			os.Exit(1)
		}
		servers = append(servers, s)
		exampleNodes = append(exampleNodes, s.Addr)
	}
	code := m.Run()
	for _, s := range servers {
		s.Close()
	}
	// No goroutine may outlive the Clients the tests closed.
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
