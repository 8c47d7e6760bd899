package tests

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
)

// When a release cannot finish within ReleaseTimeout (here the session is
// busy with a long statement of the user's), dlock ends the session from a
// control connection: Release returns ErrLockLost, the lock is free, and
// the pool of one connection hands out a new session, never the old one.
func TestHungReleaseEndsSession(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{ReleaseTimeout: 300 * time.Millisecond})
		sqlDB, _ := db.DB()
		sqlDB.SetMaxOpenConns(2) // the pinned session and one control connection
		tx, conn := pin(t, db)
		first := b.SessionID(t, conn)
		l, err := dlock.New(tx, b.UniqueKey(t))
		if err != nil {
			t.Fatalf("New() = %v", err)
		}
		mustAcquire(t, l)
		sleep := "SELECT SLEEP(10)"
		if b.Dialect == dialectPostgres {
			sleep = "SELECT pg_sleep(10)"
		}
		go func() { _, _ = conn.ExecContext(context.Background(), sleep) }()
		waitForStatement(t, b, first, "SLEEP")
		start := time.Now()
		err = l.Release(context.Background())
		if !errors.Is(err, dlock.ErrLockLost) {
			t.Fatalf("Release() = %v, want ErrLockLost", err)
		}
		within(t, "Release() of a hung session with ReleaseTimeout 300ms", time.Since(start), 300*time.Millisecond+cutSlack, "past ReleaseTimeout the session is ended: ReleaseTimeout + ~1 s")
		if l.Acquired() {
			t.Fatalf("Acquired() = true after a failed release")
		}
		waitFree(t, b, l)
		_ = conn.Close()
		next, err := sqlDB.Conn(context.Background())
		if err != nil {
			t.Fatalf("Conn() = %v", err)
		}
		defer func() { _ = next.Close() }()
		if id := b.SessionID(t, next); id == first {
			t.Fatalf("the pool gave back session %d, which failed to release its lock", id)
		}
	})
}

// A release that waits for the session past the bound of an earlier
// statement, but not past its own, completes: the session is not ended.
// dlock keeps one timer per session for these bounds and moves it only
// lazily, so this is the case where a wrong deadline would show.
func TestSlowReleaseWithinItsBound(t *testing.T) {
	needLongRun(t)
	eachBackend(t, func(t *testing.T, b *testDB) {
		const bound = 2 * time.Second
		db := b.openLocked(t, dlock.Plugin{ReleaseTimeout: bound})
		sqlDB, _ := db.DB()
		sqlDB.SetMaxOpenConns(2)
		tx, conn := pin(t, db)
		first := b.SessionID(t, conn)
		l, err := dlock.New(tx, b.UniqueKey(t))
		if err != nil {
			t.Fatalf("New() = %v", err)
		}
		mustAcquire(t, l) // the try's bound ends 2 s from now
		time.Sleep(bound / 2)
		// The session is busy from 1 s to 2.5 s: the release waits past
		// the try's bound, and returns 0.5 s before its own (3 s).
		sleep := "SELECT SLEEP(1.5)"
		if b.Dialect == dialectPostgres {
			sleep = "SELECT pg_sleep(1.5)"
		}
		slept := make(chan error, 1)
		go func() {
			_, err := conn.ExecContext(context.Background(), sleep)
			slept <- err
		}()
		waitForStatement(t, b, first, "SLEEP")
		if err := l.Release(context.Background()); err != nil {
			t.Fatalf("Release() = %v, want nil", err)
		}
		if err := <-slept; err != nil {
			t.Fatalf("%s: %v", sleep, err)
		}
		if id := b.SessionID(t, conn); id != first {
			t.Fatalf("session %d replaced by %d", first, id)
		}
		if held, ids := b.heldOutside(t, l); held {
			t.Fatalf("lock still held by %v", ids)
		}
	})
}

// waitForStatement waits until session id runs a statement containing s.
func waitForStatement(t testing.TB, b *testDB, id int64, s string) {
	t.Helper()
	q := "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ? AND UPPER(INFO) LIKE ?"
	if b.Dialect == dialectPostgres {
		q = "SELECT COUNT(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND upper(query) LIKE $2"
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		if err := b.observer(t).QueryRowContext(context.Background(), q, id, "%"+s+"%").Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		if n > 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("session %d never ran %s", id, s)
}

// A killed holder: its pool never hands out the dead session again, a
// waiter on another session gets the lock.
func TestKilledHolderPoolReuse(t *testing.T) {
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		sqlDB, _ := db.DB()
		sqlDB.SetMaxOpenConns(1)
		key := b.UniqueKey(t)
		tx, conn := pin(t, db)
		l, err := dlock.New(tx, key)
		if err != nil {
			t.Fatalf("New() = %v", err)
		}
		mustAcquire(t, l)
		waiter := newLock(t, b.openLocked(t, dlock.Plugin{}), key)
		done := make(chan error, 1)
		go func() {
			ok, err := waiter.Acquire(context.Background(), dlock.Timeout(10*time.Second))
			if !ok && err == nil {
				err = errors.New("timed out")
			}
			done <- err
		}()
		waitUntilWaiting(t, b, waiter)
		id := b.SessionID(t, conn)
		b.Kill(t, id)
		if err := <-done; err != nil {
			t.Fatalf("waiter Acquire() = %v", err)
		}
		if err := l.Release(context.Background()); !errors.Is(err, dlock.ErrLockLost) {
			t.Fatalf("Release() after kill = %v, want ErrLockLost", err)
		}
		_ = conn.Close()
		next, err := sqlDB.Conn(context.Background())
		if err != nil {
			t.Fatalf("Conn() = %v", err)
		}
		defer func() { _ = next.Close() }()
		if got := b.SessionID(t, next); got == id {
			t.Fatalf("the pool gave back the killed session %d", id)
		}
	})
}

// waitFree waits until nobody holds l's lock; a discarded session may take
// a moment to close.
func waitFree(t testing.TB, b *testDB, l *dlock.Lock) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		held, ids := b.heldOutside(t, l)
		if !held {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lock %v still held by %v", l.Key(), ids)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkPoolIdle fails the test if db's pool still has connections in use
// when the test's other cleanups are done.
func checkPoolIdle(t testing.TB, sqlDB *sql.DB) {
	t.Helper()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for sqlDB.Stats().InUse > 0 {
			if time.Now().After(deadline) {
				t.Errorf("%d connection(s) still checked out of the pool", sqlDB.Stats().InUse)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
