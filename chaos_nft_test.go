package redlock

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The nftables tier: real packet-level partitions. The test re-runs itself
// inside a fresh network namespace (unshare -n), where it may change the
// firewall without touching the machine's: there every Client connects from
// its own loopback address (127.0.0.2, 127.0.0.3, ...) and nftables rules
// drop the packets between one Client's address and some nodes' ports.

// netnsChild is set in the environment of the re-run inside the namespace.
const netnsChild = "REDLOCK_CHAOS_NETNS_CHILD"

// nftMissing returns why the nftables tier cannot run here, or "".
func nftMissing() string {
	if os.Geteuid() != 0 {
		return "not root: network namespaces and nftables rules need CAP_NET_ADMIN"
	}
	for _, tool := range []string{"unshare", "ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not found on PATH (apt-get install -y util-linux iproute2 nftables)"
		}
	}
	if out, err := exec.Command("unshare", "-n", "nft", "list", "ruleset").CombinedOutput(); err != nil {
		return fmt.Sprintf("the kernel refuses a network namespace with nftables: %v: %s", err, bytes.TrimSpace(out))
	}
	return ""
}

// TestChaosNftPartition runs the partition scenarios with nftables inside a
// network namespace: each Client loses a random minority of nodes (safety
// and liveness), then Client 0 loses a majority (safety).
func TestChaosNftPartition(t *testing.T) {
	if os.Getenv(netnsChild) == "" {
		if why := nftMissing(); why != "" {
			t.Skipf("skipping the nftables tier: %s (the proxy tier covers partitions)", why)
		}
		// lo must be up before TestMain starts its servers.
		cmd := exec.Command("unshare", "-n", "sh", "-c", `ip link set lo up && exec "$0" "$@"`,
			os.Args[0], "-test.run", "^TestChaosNftPartition$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), netnsChild+"=1")
		out, err := cmd.CombinedOutput()
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			if line := sc.Text(); strings.Contains(line, "chaos ") || strings.Contains(line, "Error") {
				t.Log(strings.TrimSpace(line))
			}
		}
		require.NoError(t, err, "the run inside the namespace failed:\n%s", out)
		return
	}
	nft := func(args ...string) {
		out, err := exec.Command("nft", args...).CombinedOutput()
		require.NoError(t, err, "nft %v: %s", args, out)
	}
	nft("add", "table", "inet", "chaos")
	nft("add", "chain", "inet", "chaos", "out", "{ type filter hook output priority 0; }")

	source := func(i int) string { return fmt.Sprintf("127.0.0.%d", 2+i) }
	for _, majority := range []bool{false, true} {
		t.Run(fmt.Sprintf("majority=%v", majority), func(t *testing.T) {
			c := newChaos(t, chaosConfig{source: source, settle: 10 * time.Second})
			n := len(c.servers)
			cut := func(client, node int) {
				src, port := source(client), fmt.Sprint(c.servers[node].Port)
				nft("add", "rule", "inet", "chaos", "out", "ip", "saddr", src, "tcp", "dport", port, "drop")
				nft("add", "rule", "inet", "chaos", "out", "ip", "daddr", src, "tcp", "sport", port, "drop")
			}
			r := c.runScenario(func(ctx context.Context) {
				for ctx.Err() == nil {
					c.faultOn()
					for k := range c.clients {
						m := 1 + c.rng.IntN(n-quorum(n))
						if majority && k == 0 {
							m = quorum(n)
						}
						for _, i := range c.rng.Perm(n)[:m] {
							cut(k, i)
						}
					}
					sleepCtx(context.Background(), c.between(150*time.Millisecond, 600*time.Millisecond))
					nft("flush", "chain", "inet", "chaos", "out")
					c.faultOff()
					sleepCtx(ctx, c.between(50*time.Millisecond, 300*time.Millisecond))
				}
			})
			requireSafe(t, r)
			assert.Positive(t, r.UnderFault)
			if !majority {
				c.requireLive(r)
			}
		})
	}
}
