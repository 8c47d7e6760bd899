// Package topology tests dlock on the production topologies: PgBouncer
// in session and in transaction pooling, a PostgreSQL streaming hot
// standby, a Galera node, a read-only MariaDB, a MariaDB with
// innodb_read_only as on an Aurora reader, and MySQL proxies that
// multiplex sessions (proxy_test.go) — each started by the tests
// themselves (see servers_test.go). Run them with make topology.
package topology

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	"github.com/jackc/pgx/v5"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// openGorm opens a *gorm.DB on dialector with a silent logger, closed when
// the test ends. No plugin is registered.
func openGorm(t *testing.T, d gorm.Dialector) *gorm.DB {
	t.Helper()
	db, err := gorm.Open(d, &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)})
	if err != nil {
		t.Fatalf("gorm.Open: %v", err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatalf("db.DB(): %v", err)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	return db
}

// openPg opens a gorm PostgreSQL pool (pgx) on dsn.
func openPg(t *testing.T, dsn string) *gorm.DB {
	t.Helper()
	return openGorm(t, postgres.Open(dsn))
}

// use registers dlock on db or fails the test.
func use(t *testing.T, db *gorm.DB) {
	t.Helper()
	if err := db.Use(dlock.Plugin{}); err != nil {
		t.Fatalf("db.Use(dlock.Plugin{}) = %v, want nil", err)
	}
}

// pin pins one session of db for the rest of the test, as db.Connection
// does, and returns its tx and *sql.Conn.
func pin(t *testing.T, db *gorm.DB) (*gorm.DB, *sql.Conn) {
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

// newLock makes a Lock on tx, closed when the test ends.
func newLock(t *testing.T, tx *gorm.DB, key any) *dlock.Lock {
	t.Helper()
	l, err := dlock.New(tx, key)
	if err != nil {
		t.Fatalf("New(%v) = %v", key, err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	return l
}

// uniqueKey returns a lock name no other test uses.
func uniqueKey(t *testing.T) string {
	t.Helper()
	var r [6]byte
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatalf("crypto/rand: %v", err)
	}
	return "topo-" + hex.EncodeToString(r[:])
}

// backendPID returns pg_backend_pid() of the session behind conn.
func backendPID(t *testing.T, conn *sql.Conn) int64 {
	t.Helper()
	var pid int64
	if err := conn.QueryRowContext(context.Background(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatalf("SELECT pg_backend_pid(): %v", err)
	}
	return pid
}

// pgHolders returns the pids holding (granted) or waiting for (!granted)
// the advisory lock k, asked on obs.
func pgHolders(t *testing.T, obs *sql.DB, k int64, granted bool) []int64 {
	t.Helper()
	u := uint64(k)
	rows, err := obs.Query(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted = $4
		AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = $3 ORDER BY pid`,
		int64(uint32(u>>32)), int64(uint32(u)), 1, granted)
	if err != nil {
		t.Fatalf("query pg_locks: %v", err)
	}
	defer rows.Close()
	var pids []int64
	for rows.Next() {
		var pid int64
		if err := rows.Scan(&pid); err != nil {
			t.Fatalf("scan pg_locks: %v", err)
		}
		pids = append(pids, pid)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read pg_locks: %v", err)
	}
	return pids
}

// sharedObserver opens a direct pool on the shared PostgreSQL, to see
// what PgBouncer's backends hold.
func sharedObserver(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", "postgres://postgres@"+sharedPostgres+"/test?sslmode=disable")
	if err != nil {
		t.Fatalf("sql.Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// waitWaiting waits until some session waits for the advisory lock k.
func waitWaiting(t *testing.T, obs *sql.DB, k int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(pgHolders(t, obs, k, false)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("nobody waits for lock %d after 10s", k)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitSleeping waits until backend pid runs pg_sleep.
func waitSleeping(t *testing.T, obs *sql.DB, pid int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		err := obs.QueryRow("SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE '%pg_sleep%'", pid).Scan(&n)
		if err != nil {
			t.Fatalf("query pg_stat_activity: %v", err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend %d does not run pg_sleep after 10s", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// refused fails unless err is a one-line error matching every sentinel in
// want and naming every word in words.
func refused(t *testing.T, what string, err error, want []error, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s = nil, want an error matching %v", what, want)
	}
	for _, w := range want {
		if !errors.Is(err, w) {
			t.Fatalf("%s = %v, want an error matching %v", what, err, w)
		}
	}
	msg := err.Error()
	for _, w := range words {
		if !strings.Contains(msg, w) {
			t.Fatalf("%s = %q, want it to name %q", what, msg, w)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Fatalf("%s = %q, want one line", what, msg)
	}
}

// PgBouncer in transaction pooling hands one server session to whichever
// client runs a transaction: two clients both "hold" one key. dlock must
// refuse it at db.Use (v0.1: both Acquires returned true).
func TestPgBouncerTransactionPoolingRefused(t *testing.T) {
	b := bouncer(t, "transaction")
	// pgx's statement cache does not work through transaction pooling
	// before PgBouncer 1.21; users run it with one of these modes.
	for _, mode := range []string{"simple_protocol", "exec"} {
		t.Run(mode, func(t *testing.T) {
			db := openPg(t, b.DSN("default_query_exec_mode="+mode))
			err := db.Use(dlock.Plugin{})
			if err == nil {
				key := uniqueKey(t)
				tx1, _ := pin(t, db)
				tx2, _ := pin(t, db)
				ok1, err1 := newLock(t, tx1, key).Acquire(context.Background(), dlock.NoWait())
				ok2, err2 := newLock(t, tx2, key).Acquire(context.Background(), dlock.NoWait())
				t.Fatalf("db.Use = nil through transaction pooling; two sessions then got Acquire() = (%v, %v) and (%v, %v)",
					ok1, err1, ok2, err2)
			}
			refused(t, "db.Use(dlock.Plugin{})", err, []error{dlock.ErrUnsupportedDialect},
				"transaction pooling", "session pooling")
		})
	}
	// Statement pooling hands out a server session per statement: refused
	// the same way (the README's transaction/statement row).
	t.Run("statement pooling", func(t *testing.T) {
		sb := bouncer(t, "statement")
		db := openPg(t, sb.DSN("default_query_exec_mode=simple_protocol"))
		err := db.Use(dlock.Plugin{})
		if err == nil {
			t.Fatalf("db.Use = nil through statement pooling")
		}
		refused(t, "db.Use(dlock.Plugin{})", err, []error{dlock.ErrUnsupportedDialect}, "session pooling")
	})
	// A pool of one session is checked on two for a moment.
	t.Run("MaxOpenConns 1", func(t *testing.T) {
		db := openPg(t, b.DSN("default_query_exec_mode=exec"))
		sqlDB, err := db.DB()
		if err != nil {
			t.Fatalf("db.DB(): %v", err)
		}
		sqlDB.SetMaxOpenConns(1)
		err = db.Use(dlock.Plugin{})
		refused(t, "db.Use(dlock.Plugin{})", err, []error{dlock.ErrUnsupportedDialect}, "transaction pooling")
		if got := sqlDB.Stats().MaxOpenConnections; got != 1 {
			t.Fatalf("MaxOpenConnections = %d after db.Use, want 1", got)
		}
	})
}

// PgBouncer in session pooling keeps a client on one server session, so
// dlock works — but pgx's PID() is PgBouncer's cancel key, not the
// backend's pid. A cancelled wait must reach the right backend: it keeps
// its session and its other locks, and returns within about a second
// (v0.1: pg_cancel_backend hit nothing; the session was discarded after
// 1 s with ErrLockLost).
func TestPgBouncerSessionPooling(t *testing.T) {
	b := bouncer(t, "session")
	db := openPg(t, b.DSN(""))
	use(t, db)
	obs := sharedObserver(t)

	t.Run("exclusion", func(t *testing.T) {
		key := uniqueKey(t)
		tx1, c1 := pin(t, db)
		tx2, _ := pin(t, db)
		l1, l2 := newLock(t, tx1, key), newLock(t, tx2, key)
		if ok, err := l1.Acquire(context.Background(), dlock.NoWait()); !ok || err != nil {
			t.Fatalf("Acquire() = %v, %v; want true, nil", ok, err)
		}
		if ok, err := l2.Acquire(context.Background(), dlock.NoWait()); ok || err != nil {
			t.Fatalf("second session Acquire() = %v, %v; want false, nil", ok, err)
		}
		pid := backendPID(t, c1)
		if got := pgHolders(t, obs, l1.DBKey().(int64), true); len(got) != 1 || got[0] != pid {
			t.Fatalf("holders on the server = %v, want [%d]", got, pid)
		}
		if err := l1.Release(context.Background()); err != nil {
			t.Fatalf("Release() = %v", err)
		}
		if ok, err := l2.Acquire(context.Background(), dlock.Timeout(5*time.Second)); !ok || err != nil {
			t.Fatalf("Acquire() after the release = %v, %v; want true, nil", ok, err)
		}
	})

	t.Run("cancel keeps the session", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			opts []dlock.Option
		}{{"blocking", nil}, {"Timeout", []dlock.Option{dlock.Timeout(time.Minute)}}} {
			t.Run(tc.name, func(t *testing.T) {
				busy, own := uniqueKey(t), uniqueKey(t)
				txH, _ := pin(t, db)
				holder := newLock(t, txH, busy)
				if ok, err := holder.Acquire(context.Background()); !ok || err != nil {
					t.Fatalf("holder Acquire() = %v, %v", ok, err)
				}
				tx, conn := pin(t, db)
				ownLock, waiter := newLock(t, tx, own), newLock(t, tx, busy)
				if ok, err := ownLock.Acquire(context.Background()); !ok || err != nil {
					t.Fatalf("own Acquire() = %v, %v", ok, err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				type result struct {
					ok  bool
					err error
				}
				done := make(chan result, 1)
				go func() {
					ok, err := waiter.Acquire(ctx, tc.opts...)
					done <- result{ok, err}
				}()
				waitWaiting(t, obs, waiter.DBKey().(int64))
				start := time.Now()
				cancel()
				r := <-done
				took := time.Since(start)
				if r.ok || !errors.Is(r.err, dlock.ErrNotAcquired) || !errors.Is(r.err, context.Canceled) {
					t.Fatalf("cancelled Acquire() = %v, %v; want false, ErrNotAcquired and Canceled", r.ok, r.err)
				}
				if errors.Is(r.err, dlock.ErrLockLost) {
					t.Fatalf("cancelled Acquire() = %v after %v; the session was discarded", r.err, took)
				}
				if took > time.Second {
					t.Fatalf("cancelled Acquire() returned after %v, want within 1s", took)
				}
				pid := backendPID(t, conn) // the session still answers
				if got := pgHolders(t, obs, ownLock.DBKey().(int64), true); len(got) != 1 || got[0] != pid {
					t.Fatalf("own lock held by %v, want [%d]", got, pid)
				}
				if held, err := ownLock.Held(context.Background()); !held || err != nil {
					t.Fatalf("own Held() = %v, %v; want true, nil", held, err)
				}
				if err := holder.Release(context.Background()); err != nil {
					t.Fatalf("holder Release() = %v", err)
				}
				if ok, err := waiter.Acquire(context.Background(), dlock.NoWait()); !ok || err != nil {
					t.Fatalf("Acquire() after the cancel = %v, %v; want true, nil", ok, err)
				}
				t.Logf("cancel returned in %v", took)
			})
		}
	})

	// The cancel goes to the pid dlock read from the server and checks on
	// every statement, never to the one pgx reports (PgBouncer's cancel
	// key, which may name another client's backend on the server).
	t.Run("cancel targets the verified pid", func(t *testing.T) {
		rec := &sessionIDs{}
		db := openPg(t, b.DSN(""))
		if err := db.Use(dlock.Plugin{Observer: rec}); err != nil {
			t.Fatalf("db.Use = %v", err)
		}
		key := uniqueKey(t)
		txH, _ := pin(t, db)
		holder := newLock(t, txH, key)
		if ok, err := holder.Acquire(context.Background()); !ok || err != nil {
			t.Fatalf("holder Acquire() = %v, %v", ok, err)
		}
		tx, conn := pin(t, db)
		real, reported := backendPID(t, conn), driverPID(t, conn)
		if real == reported {
			t.Fatalf("pgx reports pid %d, the backend's own: PgBouncer should hand out its own cancel key", reported)
		}
		waiter := newLock(t, tx, key)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := waiter.Acquire(ctx)
			done <- err
		}()
		waitWaiting(t, obs, waiter.DBKey().(int64))
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) || errors.Is(err, dlock.ErrLockLost) {
			t.Fatalf("cancelled Acquire() = %v, want Canceled and the session kept", err)
		}
		if got := rec.ended(); len(got) != 2 || got[1] != real {
			t.Fatalf("session ids of the acquires = %v, want [_ %d] (the backend's pid; pgx reports %d)", got, real, reported)
		}
		if err := holder.Release(context.Background()); err != nil {
			t.Fatalf("holder Release() = %v", err)
		}
	})

	// The release bound ends the session's backend, found by its real pid
	// (v0.1 sent pg_terminate_backend to PgBouncer's cancel key: Release
	// returned, and the lock was freed, only when the blocking statement
	// ended, 10 s later).
	t.Run("hung release ends the backend", func(t *testing.T) {
		db := openPg(t, b.DSN(""))
		if err := db.Use(dlock.Plugin{ReleaseTimeout: 300 * time.Millisecond}); err != nil {
			t.Fatalf("db.Use = %v", err)
		}
		tx, conn := pin(t, db)
		pid := backendPID(t, conn)
		l := newLock(t, tx, uniqueKey(t))
		if ok, err := l.Acquire(context.Background()); !ok || err != nil {
			t.Fatalf("Acquire() = %v, %v", ok, err)
		}
		go func() { _, _ = conn.ExecContext(context.Background(), "SELECT pg_sleep(10)") }()
		waitSleeping(t, obs, pid)
		start := time.Now()
		if err := l.Release(context.Background()); !errors.Is(err, dlock.ErrLockLost) {
			t.Fatalf("Release() = %v, want ErrLockLost", err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("Release() returned after %v, want about the 300ms bound", took)
		}
		deadline := start.Add(3 * time.Second)
		for len(pgHolders(t, obs, l.DBKey().(int64), true)) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("lock still held by backend %d %v after the release bound", pid, time.Since(start))
			}
			time.Sleep(10 * time.Millisecond)
		}
	})

	t.Run("WithLock", func(t *testing.T) {
		key := uniqueKey(t)
		ran := false
		err := dlock.WithLock(context.Background(), db, key, func(tx *gorm.DB) error {
			ran = true
			return nil
		}, dlock.Timeout(5*time.Second))
		if err != nil || !ran {
			t.Fatalf("WithLock() = %v (fn ran: %v), want nil", err, ran)
		}
	})
}

// Advisory locks on a hot standby are local to it: a lock taken there
// excludes nobody on the primary. Acquire on a standby must be refused,
// and the same pool must lock once the standby is promoted (v0.1: Acquire
// returned true while the primary held the key).
func TestHotStandby(t *testing.T) {
	pair := startPgPair(t)
	key := uniqueKey(t)

	primary := openPg(t, pair.primary.DSN())
	use(t, primary)
	ptx, _ := pin(t, primary)
	onPrimary := newLock(t, ptx, key)
	if ok, err := onPrimary.Acquire(context.Background(), dlock.NoWait()); !ok || err != nil {
		t.Fatalf("Acquire() on the primary = %v, %v; want true, nil", ok, err)
	}

	standby := openPg(t, pair.standby.DSN())
	use(t, standby) // a standby may be promoted later: refused per session
	stx, _ := pin(t, standby)
	onStandby := newLock(t, stx, key)
	ok, err := onStandby.Acquire(context.Background(), dlock.NoWait())
	if ok {
		t.Fatalf("Acquire() on the standby = true, %v while the primary holds %q", err, key)
	}
	refused(t, "Acquire() on the standby", err, []error{dlock.ErrNotAcquired, dlock.ErrUnsupportedDialect}, "standby")
	err = dlock.WithLock(context.Background(), standby, uniqueKey(t), func(*gorm.DB) error { return nil })
	refused(t, "WithLock() on the standby", err, []error{dlock.ErrNotAcquired, dlock.ErrUnsupportedDialect}, "standby")

	// Promote the standby while its pool and the session above are open.
	sdb, err := standby.DB()
	if err != nil {
		t.Fatalf("db.DB(): %v", err)
	}
	var promoted bool
	if err := sdb.QueryRow("SELECT pg_promote(true, 60)").Scan(&promoted); err != nil || !promoted {
		t.Fatalf("pg_promote() = %v, %v", promoted, err)
	}
	// The promoted server is a new primary with its own lock table.
	if ok, err := onStandby.Acquire(context.Background(), dlock.NoWait()); !ok || err != nil {
		t.Fatalf("Acquire() on the session pinned before the promotion = %v, %v; want true, nil", ok, err)
	}
	err = dlock.WithLock(context.Background(), standby, uniqueKey(t), func(*gorm.DB) error { return nil }, dlock.NoWait())
	if err != nil {
		t.Fatalf("WithLock() after the promotion = %v, want nil", err)
	}
}

// GET_LOCK is local to one Galera node: node 1 holds, node 2 grants. dlock
// must refuse a Galera node at db.Use (v0.1: accepted).
func TestGaleraRefused(t *testing.T) {
	node := startGalera(t)
	db := openGorm(t, mysql.Open(node.DSN()))
	err := db.Use(dlock.Plugin{})
	refused(t, "db.Use(dlock.Plugin{}) on a Galera node", err, []error{dlock.ErrUnsupportedDialect}, "Galera", "wsrep_on")
}

// A read-only MariaDB is a replica whose GET_LOCK excludes nobody on the
// primary: refused at db.Use (v0.1: accepted).
func TestMariaDBReadOnlyRefused(t *testing.T) {
	s := startMariaDB(t, "mariadbd (read_only)", "--read-only")
	db := openGorm(t, mysql.Open(s.DSN()))
	err := db.Use(dlock.Plugin{})
	refused(t, "db.Use(dlock.Plugin{}) on a read_only server", err, []error{dlock.ErrUnsupportedDialect}, "read_only")
}

// An Aurora MySQL reader reports @@innodb_read_only = ON while @@read_only
// may be OFF: its GET_LOCK is local to the reader. A MariaDB started with
// --innodb-read-only (and read_only off) shows the same variables:
// refused at db.Use (before issue 18: accepted).
func TestInnoDBReadOnlyRefused(t *testing.T) {
	s := startMariaDB(t, "mariadbd (innodb_read_only)", "--innodb-read-only")
	db := openGorm(t, mysql.Open(s.DSN()))
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatalf("db.DB(): %v", err)
	}
	var readOnly, innodbReadOnly bool
	if err := sqlDB.QueryRow("SELECT @@global.read_only, @@global.innodb_read_only").Scan(&readOnly, &innodbReadOnly); err != nil {
		t.Fatalf("SELECT @@read_only, @@innodb_read_only: %v", err)
	}
	if readOnly || !innodbReadOnly {
		t.Fatalf("@@read_only = %v, @@innodb_read_only = %v; want OFF and ON, as on an Aurora reader", readOnly, innodbReadOnly)
	}
	err = db.Use(dlock.Plugin{})
	refused(t, "db.Use(dlock.Plugin{}) on an innodb_read_only server", err, []error{dlock.ErrUnsupportedDialect}, "@@innodb_read_only = ON", "Aurora")
}

// A pool checked in session pooling whose PgBouncer is switched to
// transaction pooling afterwards: a session whose statement lands on
// another backend is reported lost, never trusted (v0.1: the second
// session's try ran on the holder's backend and returned true).
func TestPgBouncerSwitchedToTransactionPooling(t *testing.T) {
	b := startBouncer(t, "session")
	db := openPg(t, b.DSN("default_query_exec_mode=exec"))
	use(t, db)
	obs := sharedObserver(t)
	key := uniqueKey(t)
	tx1, c1 := pin(t, db)
	tx2, c2 := pin(t, db)
	l1, l2 := newLock(t, tx1, key), newLock(t, tx2, key)
	// Each session learns its backend while the pooler still pins it.
	if ok, err := l1.Acquire(context.Background(), dlock.NoWait()); !ok || err != nil {
		t.Fatalf("Acquire() = %v, %v; want true, nil", ok, err)
	}
	if ok, err := l2.Acquire(context.Background(), dlock.NoWait()); ok || err != nil {
		t.Fatalf("second session Acquire() = %v, %v; want false, nil", ok, err)
	}
	pid1, pid2 := backendPID(t, c1), backendPID(t, c2)
	if pid1 == pid2 {
		t.Fatalf("two sessions on backend %d under session pooling", pid1)
	}
	b.reload(t, "transaction")
	// Each session's next statement gives its backend back to the pool,
	// the holder's last: PgBouncer reuses the most recent one first.
	for _, c := range []*sql.Conn{c2, c1} {
		if _, err := c.ExecContext(context.Background(), "SELECT 1"); err != nil {
			t.Fatalf("SELECT 1: %v", err)
		}
	}
	// The second session's try lands on the holder's backend, pid1, where
	// pg_try_advisory_lock succeeds: dlock must see the other backend and
	// refuse, not answer true, and not (false, nil) as if it were busy.
	ok, err := l2.Acquire(context.Background(), dlock.NoWait())
	if ok || !errors.Is(err, dlock.ErrLockLost) {
		t.Fatalf("second session Acquire() on another backend = %v, %v; want false, ErrLockLost (backend %d holds %q)", ok, err, pid1, key)
	}
	t.Logf("second session Acquire() = %v, %v", ok, err)
	if got := pgHolders(t, obs, l1.DBKey().(int64), true); len(got) != 1 || got[0] != pid1 {
		t.Fatalf("holders %v, want [%d]", got, pid1)
	}
}

// driverPID returns the pid pgx learnt at connect time (behind PgBouncer,
// the pooler's cancel key).
func driverPID(t *testing.T, conn *sql.Conn) int64 {
	t.Helper()
	var pid int64
	err := conn.Raw(func(dc any) error {
		c, ok := dc.(interface{ Conn() *pgx.Conn })
		if !ok {
			return fmt.Errorf("driver connection %T is not pgx's", dc)
		}
		pid = int64(c.Conn().PgConn().PID())
		return nil
	})
	if err != nil {
		t.Fatalf("conn.Raw: %v", err)
	}
	return pid
}

// sessionIDs is an Observer that records the SessionID of each acquire
// that ended, in order.
type sessionIDs struct {
	mu  sync.Mutex
	ids []int64
}

func (r *sessionIDs) ended() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int64(nil), r.ids...)
}

func (r *sessionIDs) AcquireStart(ctx context.Context, _ dlock.AcquireEvent) context.Context {
	return ctx
}

func (r *sessionIDs) AcquireEnd(_ context.Context, e dlock.AcquireEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids = append(r.ids, e.SessionID)
}

func (r *sessionIDs) Released(context.Context, dlock.ReleaseEvent) {}
func (r *sessionIDs) Lost(dlock.ReleaseEvent)                      {}
func (r *sessionIDs) WithLockStart(ctx context.Context, _ any) context.Context {
	return ctx
}
func (r *sessionIDs) WithLockEnd(context.Context, error) {}
