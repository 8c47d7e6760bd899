package tests

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	"gorm.io/driver/mysql"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// The proxies of mysqlproxy_test.go against dlock (issue 18): a proxy
// that multiplexes MySQL sessions is refused at db.Use, and a grant on
// another server session than the one dlock knows is caught by the lock
// statement itself, undone there and reported.

// eachMySQL runs fn for the MySQL-family server only.
func eachMySQL(t *testing.T, fn func(t *testing.T, b *testDB)) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		if b.Dialect != dialectMySQL {
			t.Skip("a MySQL-protocol proxy")
		}
		fn(t, b)
	})
}

// openThrough opens a gorm pool on dsn (the proxy's) with no plugin.
func openThrough(t *testing.T, dsn string) (*gorm.DB, *sql.DB) {
	t.Helper()
	db, err := gorm.Open(mysql.Open(dsn), &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)})
	if err != nil {
		t.Fatalf("gorm.Open through the proxy: %v", err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatalf("db.DB(): %v", err)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	return db, sqlDB
}

// connectionID asks CONNECTION_ID() on conn.
func connectionID(t *testing.T, conn *sql.Conn) int64 {
	t.Helper()
	var id int64
	if err := conn.QueryRowContext(context.Background(), "SELECT CONNECTION_ID()").Scan(&id); err != nil {
		t.Fatalf("SELECT CONNECTION_ID(): %v", err)
	}
	return id
}

// The proxy really multiplexes: three client sessions over two server
// sessions, so two of them report one CONNECTION_ID(), and one client
// session's id moves from one statement to the next.
func TestMySQLProxySharesSessions(t *testing.T) {
	eachMySQL(t, func(t *testing.T, b *testDB) {
		p := startProxy(t, b.DSN, proxyMultiplex, 2)
		_, sqlDB := openThrough(t, p.DSN(b.DSN))
		var ids []int64
		for range 3 {
			conn, err := sqlDB.Conn(context.Background())
			if err != nil {
				t.Fatalf("sqlDB.Conn: %v", err)
			}
			t.Cleanup(func() { _ = conn.Close() })
			ids = append(ids, connectionID(t, conn))
		}
		if ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2] {
			t.Fatalf("three client sessions through a pool of two reported CONNECTION_ID() %v, want two of them equal", ids)
		}
		conn, err := sqlDB.Conn(context.Background())
		if err != nil {
			t.Fatalf("sqlDB.Conn: %v", err)
		}
		defer conn.Close()
		first, second := connectionID(t, conn), connectionID(t, conn)
		if first == second {
			t.Fatalf("one client session reported CONNECTION_ID() %d twice, want it to move", first)
		}
		t.Logf("three client sessions: CONNECTION_ID() %v; one session asked twice: %d, then %d", ids, first, second)
	})
}

// A multiplexing proxy is refused at db.Use, in both of its modes, also
// for a pool of one session; a proxy that gives each client its own server
// session is accepted, and locks through it.
func TestMySQLProxyRefusedAtUse(t *testing.T) {
	eachMySQL(t, func(t *testing.T, b *testDB) {
		for _, tc := range []struct {
			name string
			mode proxyMode
		}{{"multiplex", proxyMultiplex}, {"pin on GET_LOCK", proxyPinOnLock}} {
			t.Run(tc.name, func(t *testing.T) {
				p := startProxy(t, b.DSN, tc.mode, 2)
				db, _ := openThrough(t, p.DSN(b.DSN))
				err := db.Use(dlock.Plugin{})
				wantRefused(t, "db.Use(dlock.Plugin{}) through the proxy", err, "multiplexes", "CONNECTION_ID()")
				if _, ok := db.Plugins["gorm:dlock"]; ok {
					t.Fatalf("plugin registered after a refusal")
				}
			})
		}
		t.Run("MaxOpenConns 1", func(t *testing.T) {
			p := startProxy(t, b.DSN, proxyMultiplex, 2)
			db, sqlDB := openThrough(t, p.DSN(b.DSN))
			sqlDB.SetMaxOpenConns(1)
			err := db.Use(dlock.Plugin{})
			wantRefused(t, "db.Use(dlock.Plugin{}) through the proxy", err, "multiplexes")
			if got := sqlDB.Stats().MaxOpenConnections; got != 1 {
				t.Fatalf("MaxOpenConnections = %d after db.Use, want 1", got)
			}
		})
		t.Run("session pooling", func(t *testing.T) {
			p := startProxy(t, b.DSN, proxySession, 2)
			db, _ := openThrough(t, p.DSN(b.DSN))
			if err := db.Use(dlock.Plugin{}); err != nil {
				t.Fatalf("db.Use(dlock.Plugin{}) through a proxy in session mode = %v, want nil", err)
			}
			ran := false
			err := dlock.WithLock(context.Background(), db, b.UniqueKey(t), func(*gorm.DB) error {
				ran = true
				return nil
			}, dlock.Timeout(5*time.Second))
			if err != nil || !ran {
				t.Fatalf("WithLock() through a proxy in session mode = %v (fn ran: %v), want nil", err, ran)
			}
		})
	})
}

// wantRefused fails unless err is a one-line error matching
// ErrUnsupportedDialect that names every word in words.
func wantRefused(t *testing.T, what string, err error, words ...string) {
	t.Helper()
	if !errors.Is(err, dlock.ErrUnsupportedDialect) {
		t.Fatalf("%s = %v, want ErrUnsupportedDialect", what, err)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("%s = %q, want it to name %q", what, err, w)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("%s = %q, want one line", what, err)
	}
}

// useThenMultiplex registers dlock through a proxy in session mode, then
// switches it to mode: the proxy was reconfigured after db.Use, which is
// what the lock statements' own check is for.
func useThenMultiplex(t *testing.T, b *testDB, mode proxyMode) (*mysqlProxy, *gorm.DB) {
	t.Helper()
	p := startProxy(t, b.DSN, proxySession, 2)
	db, _ := openThrough(t, p.DSN(b.DSN))
	if err := db.Use(dlock.Plugin{}); err != nil {
		t.Fatalf("db.Use(dlock.Plugin{}) through a proxy in session mode = %v, want nil", err)
	}
	p.setMode(mode)
	return p, db
}

// A grant on another server session than the one dlock learned for the
// session is caught by the lock statement itself, which carries
// CONNECTION_ID() back: Acquire reports it (ErrNotAcquired and
// ErrUnsupportedDialect), the grant is released on the server session
// that holds it, and the session is discarded (before issue 18: Acquire
// returned true, holding the lock on a server session dlock did not know,
// so its cancel and its held checks went to another one).
func TestMySQLProxyGrantOnAnotherBackend(t *testing.T) {
	eachMySQL(t, func(t *testing.T, b *testDB) {
		p, db := useThenMultiplex(t, b, proxyPinOnLock)
		tx, _ := pin(t, db)
		key := b.UniqueKey(t)
		l, err := dlock.New(tx, key)
		if err != nil {
			t.Fatalf("New() = %v", err)
		}
		defer l.Close(context.Background())
		// Round robin over two free server sessions: the session id is
		// read on one, GET_LOCK runs on the other, which the proxy pins.
		ok, err := l.Acquire(context.Background(), dlock.NoWait())
		if ok {
			held, owner := b.HeldByMySQL(t, key)
			t.Fatalf("Acquire() = true, %v through a proxy that ran GET_LOCK on another server session (held: %v by %d)", err, held, owner)
		}
		if !errors.Is(err, dlock.ErrNotAcquired) {
			t.Fatalf("Acquire() = %v, want ErrNotAcquired", err)
		}
		wantRefused(t, "Acquire()", err, "ran on server session", "multiplexes", "released there")
		t.Logf("Acquire() = %v", err)
		var at, own int64
		_, rest, _ := strings.Cut(err.Error(), "ran on server session ")
		if _, serr := fmt.Sscanf(rest, "%d, not on the session's own %d", &at, &own); serr != nil {
			t.Fatalf("cannot read the server sessions from %q: %v", err, serr)
		}
		var undo bool
		for _, q := range p.sent(at) {
			if strings.Contains(q, "RELEASE_LOCK(") && strings.Contains(q, fmt.Sprintf("CONNECTION_ID() = %d", at)) {
				undo = true
			}
		}
		if !undo {
			t.Fatalf("no release was sent to server session %d, which ran the GET_LOCK; it got %q", at, p.sent(at))
		}
		b.waitFreeName(t, key)
		if ok, err := l.Acquire(context.Background(), dlock.NoWait()); ok || err == nil {
			t.Fatalf("Acquire() on the discarded session = %v, %v; want false and an error", ok, err)
		}
	})
}

// Through a proxy that pins a client to a server session at its first
// GET_LOCK (ProxySQL), WithLock bodies for one key never overlap: a
// session whose grant lands on another server session than the one dlock
// learned is refused, its grant undone, and the session discarded.
func TestMySQLProxyPinnedNoOverlap(t *testing.T) {
	t.Parallel() // its own proxy and key, no duration measured
	eachMySQL(t, func(t *testing.T, b *testDB) {
		_, db := useThenMultiplex(t, b, proxyPinOnLock)
		key := b.UniqueKey(t)
		var inside, ran, overlaps, refusals atomic.Int64
		var mu sync.Mutex
		var others []error
		var wg sync.WaitGroup
		deadline := time.Now().Add(3 * time.Second)
		for range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					err := dlock.WithLock(context.Background(), db, key, func(*gorm.DB) error {
						if inside.Add(1) != 1 {
							overlaps.Add(1)
						}
						time.Sleep(2 * time.Millisecond)
						inside.Add(-1)
						ran.Add(1)
						return nil
					}, dlock.Timeout(2*time.Second))
					switch {
					case err == nil:
					case errors.Is(err, dlock.ErrNotAcquired) && errors.Is(err, dlock.ErrUnsupportedDialect):
						refusals.Add(1)
					default:
						mu.Lock()
						others = append(others, err)
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		t.Logf("through the pinning proxy: %d bodies ran, %d grants on another server session refused, %d other errors", ran.Load(), refusals.Load(), len(others))
		if n := overlaps.Load(); n > 0 {
			t.Fatalf("%d WithLock bodies for one key overlapped", n)
		}
		for _, err := range others {
			if !errors.Is(err, dlock.ErrNotAcquired) {
				t.Errorf("WithLock() = %v, want nil or ErrNotAcquired", err)
			}
		}
		if ran.Load() == 0 {
			t.Fatalf("no WithLock body ran through the pinning proxy")
		}
		// Fresh sessions read their id on one server session and run
		// GET_LOCK on the next: the lock statements' check must fire.
		if refusals.Load() == 0 {
			t.Fatalf("no grant on another server session was refused through the pinning proxy")
		}
		b.waitFreeName(t, key)
	})
}

// A server without JSON_TABLE (older than dlock supports) refuses the
// loss check's statement as a syntax error. The check then names every
// hold in its text, as v0.2 did: holds still there are not reported lost,
// one dropped behind dlock's back is, and so is one whose session was
// killed, each with its cause. The proxy plays the old server, answering
// JSON_TABLE with error 1064 and passing everything else to MariaDB.
func TestMySQLLossCheckWithoutJSONTable(t *testing.T) {
	eachMySQL(t, func(t *testing.T, b *testDB) {
		p := startProxy(t, b.DSN, proxySession, 2)
		p.mu.Lock()
		p.noJSONTable = true
		p.mu.Unlock()
		db, _ := openThrough(t, p.DSN(b.DSN))
		const interval = 100 * time.Millisecond
		if err := db.Use(dlock.Plugin{CheckInterval: interval}); err != nil {
			t.Fatalf("db.Use through a proxy in session mode = %v, want nil", err)
		}
		cases := []struct {
			name string
			end  func(t *testing.T, tx *gorm.DB) // ends the hold behind dlock's back
			want error
		}{
			{"dropped", func(t *testing.T, tx *gorm.DB) {
				if err := tx.Exec("SELECT RELEASE_ALL_LOCKS()").Error; err != nil {
					t.Fatalf("RELEASE_ALL_LOCKS() = %v", err)
				}
			}, errors.New("is alive but no longer holds it")},
			{"killed", func(t *testing.T, tx *gorm.DB) {
				var id int64
				if err := tx.Raw("SELECT CONNECTION_ID()").Scan(&id).Error; err != nil {
					t.Fatalf("SELECT CONNECTION_ID() = %v", err)
				}
				b.Kill(t, id) // the proxy's server session, which is the client's own
			}, errors.New("its session ended")},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				err := dlock.WithLock(context.Background(), db, b.UniqueKey(t), func(tx *gorm.DB) error {
					ctx := tx.Statement.Context
					// Four rounds of the check on a hold that is there.
					select {
					case <-ctx.Done():
						t.Fatalf("fn's context ended while the lock was held: %v", context.Cause(ctx))
					case <-time.After(4 * interval):
					}
					c.end(t, tx)
					waitDone(t, ctx.Done(), 2*time.Second)
					cause := context.Cause(ctx)
					if !errors.Is(cause, dlock.ErrLockLost) || !strings.Contains(cause.Error(), c.want.Error()) {
						t.Errorf("context.Cause(fn's ctx) = %v, want ErrLockLost saying %q", cause, c.want)
					}
					return nil
				})
				if !errors.Is(err, dlock.ErrLockLost) {
					t.Fatalf("WithLock() = %v, want ErrLockLost", err)
				}
			})
		}
		p.mu.Lock()
		refused, log := p.refusedJSON, p.log
		p.mu.Unlock()
		if refused == 0 {
			t.Fatalf("the loss check never sent its JSON_TABLE statement to the proxy")
		}
		byName := 0
		for _, e := range log {
			if strings.Contains(e.query, "IS_USED_LOCK(") && strings.Contains(e.query, "information_schema.PROCESSLIST") {
				byName++
			}
		}
		if byName == 0 {
			t.Fatalf("no check statement naming the holds went through the proxy after JSON_TABLE was refused %d times", refused)
		}
		t.Logf("JSON_TABLE refused %d times; %d checks named the holds", refused, byName)
	})
}

// waitFreeName waits until nobody holds the GET_LOCK name (dlock's name
// for key with no prefix is the key itself).
func (b *testDB) waitFreeName(t *testing.T, name string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		held, owner := b.HeldByMySQL(t, name)
		if !held {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lock %q still held by session %d 5s after the last WithLock", name, owner)
		}
		time.Sleep(pollStep)
	}
}
