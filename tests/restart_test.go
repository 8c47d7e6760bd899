package tests

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
)

// The server restarts while a lock is held and another session waits:
// both get errors, not hangs, and new locks work after the restart. The
// test stops and starts the local server, so it runs only under
// `make stress`, as root, against the default local servers.
func TestServerRestart(t *testing.T) {
	if stressScale() == 1 {
		t.Skip("restarts the database server: runs under make stress (DLOCK_STRESS)")
	}
	if os.Geteuid() != 0 {
		t.Skip("restarting the local server needs root")
	}
	eachBackend(t, func(t *testing.T, b *testDB) {
		if os.Getenv(envMySQL) != "" || os.Getenv(envPostgres) != "" {
			t.Skip("restarts only the default local servers, not one named by a DSN variable")
		}
		db := b.openLocked(t, dlock.Plugin{})
		key := b.UniqueKey(t)
		holder := newLock(t, db, key)
		mustAcquire(t, holder)
		waiter := newLock(t, db, key)
		type result struct {
			ok  bool
			err error
		}
		done := make(chan result, 1)
		go func() {
			ok, err := waiter.Acquire(context.Background())
			done <- result{ok, err}
		}()
		waitUntilWaiting(t, b, waiter)
		b.closeObserver()

		restartServer(t, b)

		select {
		case r := <-done:
			if r.ok || !errors.Is(r.err, dlock.ErrLockLost) {
				t.Fatalf("waiter Acquire() across a restart = %v, %v; want false, ErrLockLost", r.ok, r.err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("waiter still blocked 30s after the restart")
		}
		if held, err := holder.Held(context.Background()); held || !errors.Is(err, dlock.ErrLockLost) {
			t.Fatalf("holder Held() after restart = %v, %v; want false, ErrLockLost", held, err)
		}
		if err := holder.Release(context.Background()); !errors.Is(err, dlock.ErrLockLost) {
			t.Fatalf("holder Release() after restart = %v, want ErrLockLost", err)
		}
		fresh := newLock(t, db, key)
		mustAcquire(t, fresh, dlock.Timeout(10*time.Second))
		b.wantHeldBy(t, fresh, b.sessionOf(t, fresh))
	})
}

// restartServer stops and starts the local server of b and waits until it
// answers again.
func restartServer(t *testing.T, b *testDB) {
	t.Helper()
	run := func(name string, args ...string) {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	if b.Dialect == dialectMySQL {
		run("mysqladmin", "-h127.0.0.1", "-uroot", "shutdown")
		// mysqladmin returns before the server has exited, and
		// start-stop-daemon does nothing while the old one still runs.
		deadline := time.Now().Add(60 * time.Second)
		for exec.Command("start-stop-daemon", "--status", "--exec", "/usr/sbin/mariadbd").Run() == nil {
			if time.Now().After(deadline) {
				t.Fatalf("mariadbd did not exit within 60s of the shutdown")
			}
			time.Sleep(100 * time.Millisecond)
		}
		run("start-stop-daemon", "--start", "--oknodo", "--background", "--exec", "/usr/sbin/mariadbd")
	} else {
		versions, _ := filepath.Glob("/etc/postgresql/*")
		if len(versions) == 0 {
			t.Skip("no /etc/postgresql cluster to restart")
		}
		run("pg_ctlcluster", "--skip-systemctl-redirect", filepath.Base(versions[0]), "main", "restart", "-m", "fast")
	}
	raw := b.Raw(t)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := raw.PingContext(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not come back within 60s: %v", b.Name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
