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
// test stops and starts the server, so it runs only under `make stress`:
// as root against the default local servers, or against a server named by
// a DSN variable with the command that restarts it in
// DLOCK_TEST_MYSQL_RESTART / DLOCK_TEST_POSTGRES_RESTART. Asked for under
// CI or DLOCK_TEST_REQUIRE_DB without a way to restart, it fails.
func TestServerRestart(t *testing.T) {
	if os.Getenv("DLOCK_STRESS") == "" {
		t.Skip("restarts the database server: runs with make stress (DLOCK_STRESS)")
	}
	eachBackend(t, func(t *testing.T, b *testDB) {
		restart := restarter(t, b)
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

		restart()

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

// restartCmd names, per dialect, the variable that holds a shell command
// restarting the server its DSN variable names (a CI job sets it to
// `docker restart <service container>`).
var restartCmd = map[string]string{
	dialectMySQL:    "DLOCK_TEST_MYSQL_RESTART",
	dialectPostgres: "DLOCK_TEST_POSTGRES_RESTART",
}

// restarter returns the way to restart b's server: the command in its
// restart variable, or, for the default local servers, stopping and
// starting them as root. When there is none it skips the test, or fails it
// under CI or DLOCK_TEST_REQUIRE_DB (make stress asked for it).
func restarter(t *testing.T, b *testDB) func() {
	t.Helper()
	if cmd := os.Getenv(restartCmd[b.Dialect]); cmd != "" {
		return func() {
			t.Helper()
			if out, err := exec.Command("sh", "-c", cmd).CombinedOutput(); err != nil {
				t.Fatalf("%s (%s): %v\n%s", restartCmd[b.Dialect], cmd, err, out)
			}
			waitRestarted(t, b)
		}
	}
	dsnVar := map[string]string{dialectMySQL: envMySQL, dialectPostgres: envPostgres}[b.Dialect]
	switch {
	case os.Getenv(dsnVar) != "":
		gateMissing(t, "make stress", "%s names the server and %s does not say how to restart it", dsnVar, restartCmd[b.Dialect])
	case os.Geteuid() != 0:
		gateMissing(t, "make stress", "restarting the local server needs root (sudo make stress)")
	case b.Dialect == dialectMySQL:
		if _, err := exec.LookPath("mysqladmin"); err != nil {
			gateMissing(t, "make stress", "restarting the local MariaDB needs mysqladmin")
		}
	default:
		if versions, _ := filepath.Glob("/etc/postgresql/*"); len(versions) == 0 {
			gateMissing(t, "make stress", "no /etc/postgresql cluster to restart")
		}
	}
	return func() {
		t.Helper()
		restartServer(t, b)
	}
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
		run("pg_ctlcluster", "--skip-systemctl-redirect", filepath.Base(versions[0]), "main", "restart", "-m", "fast")
	}
	waitRestarted(t, b)
}

// waitRestarted waits until b's server answers again, for up to 60 s.
func waitRestarted(t *testing.T, b *testDB) {
	t.Helper()
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
