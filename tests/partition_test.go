package tests

// Real packet loss (issue #11): the holder's packets are dropped on the
// loopback with iptables, and the server frees its lock. Needs root and
// iptables; `make partition` runs it (DLOCK_TEST_PARTITION=1).

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
)

const envPartition = "DLOCK_TEST_PARTITION"

// needPartitionRun skips unless the partition tests are asked for.
func needPartitionRun(t *testing.T) {
	t.Helper()
	if os.Getenv(envPartition) == "" {
		t.Skipf("network partition tests run with %s=1 (make partition)", envPartition)
	}
}

// needPartition skips unless the partition tests are asked for and can
// run; under CI or DLOCK_TEST_REQUIRE_DB a missing piece fails instead.
func needPartition(t *testing.T) {
	t.Helper()
	needPartitionRun(t)
	switch {
	case os.Geteuid() != 0:
		gateMissing(t, "make partition", "the packet loss tests need root (sudo make partition)")
	default:
		if _, err := exec.LookPath("iptables"); err != nil {
			gateMissing(t, "make partition", "the packet loss tests need iptables (apt-get install iptables)")
		}
	}
}

// gateMissing is called by a test whose group was asked for (its make
// target set the gate variable) but that lacks something it needs: it
// fails the test when CI or DLOCK_TEST_REQUIRE_DB is set, so that a green
// run means the group ran, and skips it otherwise. target names the make
// target that runs the group.
func gateMissing(t testing.TB, target, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if v := requireVar(); v != "" {
		t.Fatalf("%s is set and %s asked for this test, but %s", v, target, msg)
	}
	t.Skipf("%s (%s runs it; it fails instead under CI or %s)", msg, target, envRequire)
}

// dropPort drops every loopback packet to or from TCP port port until the
// test ends, and removes exactly the rules it added.
func dropPort(t *testing.T, port int) {
	t.Helper()
	p := strconv.Itoa(port)
	rules := [][]string{
		{"INPUT", "-i", "lo", "-p", "tcp", "--dport", p, "-j", "DROP"},
		{"INPUT", "-i", "lo", "-p", "tcp", "--sport", p, "-j", "DROP"},
	}
	for _, r := range rules {
		if out, err := exec.Command("iptables", append([]string{"-w", "-I"}, r...)...).CombinedOutput(); err != nil {
			t.Fatalf("iptables -I %v: %v: %s", r, err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("iptables", append([]string{"-w", "-D"}, r...)...).CombinedOutput(); err != nil {
				t.Errorf("iptables -D %v: %v: %s", r, err, out)
			}
		})
	}
}

// clientPort returns the client TCP port of session id, as the server
// sees it.
func (b *testDB) clientPort(t *testing.T, id int64) int {
	t.Helper()
	ctx := context.Background()
	if b.Dialect == dialectPostgres {
		var port int
		if err := b.observer(t).QueryRowContext(ctx, "SELECT client_port FROM pg_stat_activity WHERE pid = $1", id).Scan(&port); err != nil {
			t.Fatalf("client_port of %d: %v", id, err)
		}
		return port
	}
	var host string
	if err := b.observer(t).QueryRowContext(ctx, "SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = ?", id).Scan(&host); err != nil {
		t.Fatalf("HOST of %d: %v", id, err)
	}
	port, err := strconv.Atoi(host[strings.LastIndex(host, ":")+1:])
	if err != nil {
		t.Fatalf("HOST %q of session %d has no port", host, id)
	}
	return port
}

// A holder that vanishes from the network: on PostgreSQL, with dlock's
// default settings, the server ends its session and frees the lock
// within 20 s. On MariaDB the server keeps it until the session's
// wait_timeout (here set to 10 s on the holder's session) ends it: the
// figure the README gives.
func TestVanishedHolderFreed(t *testing.T) {
	needPartition(t)
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		tx, conn := pin(t, db)
		id := b.SessionID(t, conn)
		want := 20 * time.Second
		if b.Dialect == dialectMySQL {
			if _, err := conn.ExecContext(context.Background(), "SET SESSION wait_timeout = 10"); err != nil {
				t.Fatalf("SET SESSION wait_timeout: %v", err)
			}
			want = 15 * time.Second
		}
		key := b.UniqueKey(t)
		l, err := dlock.New(tx, key)
		if err != nil {
			t.Fatalf("New() = %v", err)
		}
		mustAcquire(t, l)
		port := b.clientPort(t, id)
		dropPort(t, port)
		cut := time.Now()
		other := newLock(t, b.openLocked(t, dlock.Plugin{}), key)
		for {
			ok, err := other.Acquire(context.Background(), dlock.NoWait())
			if err != nil {
				t.Fatalf("another session: Acquire() = %v", err)
			}
			if ok {
				break
			}
			if time.Since(cut) > want+10*time.Second {
				t.Fatalf("the vanished holder's lock is still held %v after the cut", time.Since(cut))
			}
			time.Sleep(200 * time.Millisecond)
		}
		freed := time.Since(cut)
		t.Logf("%s freed the vanished holder's lock %v after its packets were dropped", b.Name, freed.Round(100*time.Millisecond))
		if freed > want {
			t.Fatalf("lock freed %v after the cut, want within %v", freed, want)
		}
	})
}
