package tests

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	"gorm.io/gorm"
)

// openLocked opens a fresh pool with the dlock plugin registered.
func (b *testDB) openLocked(t testing.TB, p dlock.Plugin) *gorm.DB {
	t.Helper()
	db := b.Open(t)
	if err := db.Use(p); err != nil {
		t.Fatalf("db.Use(dlock.Plugin{}): %v", err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatalf("db.DB(): %v", err)
	}
	checkPoolIdle(t, sqlDB) // runs after the cleanups registered later
	return db
}

// pin pins one session of db for the rest of the test, as db.Connection
// does, and returns its tx and *sql.Conn.
func pin(t testing.TB, db *gorm.DB) (*gorm.DB, *sql.Conn) {
	t.Helper()
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatalf("db.DB(): %v", err)
	}
	conn, err := sqlDB.Conn(context.Background())
	if err != nil {
		t.Fatalf("sqlDB.Conn: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	tx := db.WithContext(context.Background())
	tx.Statement.ConnPool = conn
	return tx, conn
}

// newLock pins a fresh session and makes a Lock on it.
func newLock(t testing.TB, db *gorm.DB, key any, opts ...dlock.Option) *dlock.Lock {
	t.Helper()
	tx, _ := pin(t, db)
	l, err := dlock.New(tx, key, opts...)
	if err != nil {
		t.Fatalf("New(%v): %v", key, err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	return l
}

// mustNew makes a Lock on the pinned session tx or fails the test.
func mustNew(t testing.TB, tx *gorm.DB, key any, opts ...dlock.Option) *dlock.Lock {
	t.Helper()
	l, err := dlock.New(tx, key, opts...)
	if err != nil {
		t.Fatalf("New(%v): %v", key, err)
	}
	return l
}

// mustAcquire acquires l or fails the test.
func mustAcquire(t testing.TB, l *dlock.Lock, opts ...dlock.Option) {
	t.Helper()
	ok, err := l.Acquire(context.Background(), opts...)
	if !ok || err != nil {
		t.Fatalf("Acquire(%v) = %v, %v; want true, nil", l.Key(), ok, err)
	}
}

// heldOutside reports, from an independent session, whether l's lock is
// held by anyone, and by which session ids.
func (b *testDB) heldOutside(t testing.TB, l *dlock.Lock) (bool, []int64) {
	t.Helper()
	switch k := l.DBKey().(type) {
	case string:
		held, id := b.HeldByMySQL(t, k)
		if !held {
			return false, nil
		}
		return true, []int64{id}
	case int64:
		return b.HeldByPg(t, k)
	}
	t.Fatalf("DBKey() = %T", l.DBKey())
	return false, nil
}

// sessionOf returns the server session id of l's session.
func (b *testDB) sessionOf(t testing.TB, l *dlock.Lock) int64 {
	t.Helper()
	conn, ok := l.DB().Statement.ConnPool.(*sql.Conn)
	if !ok {
		t.Fatalf("Lock not on a *sql.Conn")
	}
	return b.SessionID(t, conn)
}

// wantHeldBy fails unless l's lock is held by exactly the session id.
func (b *testDB) wantHeldBy(t testing.TB, l *dlock.Lock, id int64) {
	t.Helper()
	held, ids := b.heldOutside(t, l)
	if !held || len(ids) != 1 || ids[0] != id {
		t.Fatalf("lock %v held by %v (held=%v), want session %d", l.Key(), ids, held, id)
	}
}

// wantFree fails unless nobody holds l's lock.
func (b *testDB) wantFree(t testing.TB, l *dlock.Lock) {
	t.Helper()
	if held, ids := b.heldOutside(t, l); held {
		t.Fatalf("lock %v held by %v, want free", l.Key(), ids)
	}
}

// isMariaDB reports whether b is a MariaDB server, by what the server says
// it is (VERSION() contains "MariaDB"), not by its subtest name.
func (b *testDB) isMariaDB() bool {
	return b.Dialect == dialectMySQL && strings.Contains(b.Version, "MariaDB")
}

// pgVersionNum returns the PostgreSQL server's server_version_num
// (150004 for 15.4).
func (b *testDB) pgVersionNum(t testing.TB) int {
	t.Helper()
	var v int
	if err := b.observer(t).QueryRowContext(context.Background(), "SELECT current_setting('server_version_num')::int").Scan(&v); err != nil {
		t.Fatalf("server_version_num: %v", err)
	}
	return v
}

// The README's numbers the tests hold dlock to. A test asserts the
// README's number plus boundMargin as its upper bound: the margin is for
// this kind of machine (2 shared cores, the race detector, other test
// packages and agents loading it), never a loosening of the number.
const (
	// promptly is the README's "promptly" for a wait whose ctx ends: the
	// cancel is one statement on a control connection. dlock gives up on
	// a cancel unanswered for cancelGiveUp and discards the session, so
	// "promptly" is well under that.
	promptly = 250 * time.Millisecond
	// cancelGiveUp is the README's "no control connection cancels a wait
	// within 1 s": then the session is discarded.
	cancelGiveUp = time.Second
	// cutSlack is the README's "+ ~1 s" past ReleaseTimeout for a
	// statement whose session must be ended.
	cutSlack = time.Second
	// acquireCutSlack is the README's "+ ~1.2 s" past its Timeout or
	// deadline for an Acquire whose network is cut (a backstop cancel
	// 200 ms after the wait's end, then 1 s for the cancel's answer).
	acquireCutSlack = 1200 * time.Millisecond
	// boundMargin is the margin above each README number.
	boundMargin = 250 * time.Millisecond
)

// within fails the test unless took is at most the README's bound plus
// boundMargin; what names the call and readme the README's figure.
func within(t testing.TB, what string, took, bound time.Duration, readme string) {
	t.Helper()
	if took > bound+boundMargin {
		t.Fatalf("%s took %v; the README says %s (%v), + %v margin", what, took, readme, bound, boundMargin)
	}
	t.Logf("%s took %v (bound %v + %v margin: %s)", what, took, bound, boundMargin, readme)
}
