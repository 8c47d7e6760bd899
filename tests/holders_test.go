package tests

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/gormdlock/dlock"
	"gorm.io/gorm"
)

// holdersTimeout bounds the wait until the server shows a waiter.
const holdersTimeout = 10 * time.Second

// startWaiter pins a fresh session and starts an Acquire of key on it in a
// goroutine; the Acquire waits until the test ends (or stop is called),
// which cancels it. It returns the session id and a stop function that
// cancels the wait and returns once Acquire has.
func (b *testDB) startWaiter(t testing.TB, db *gorm.DB, key any, opts ...dlock.Option) (id int64, stop func()) {
	t.Helper()
	l := newLock(t, db, key, opts...)
	id = b.sessionOf(t, l)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if ok, err := l.Acquire(ctx); ok {
			_ = l.Close(context.Background())
		} else if !errors.Is(err, context.Canceled) {
			t.Errorf("waiter Acquire(%v) = %v, %v; want a wait until cancelled", key, ok, err)
		}
	}()
	stop = func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return id, stop
}

// holdersWhen polls Holders until it returns n rows and returns them.
func holdersWhen(t testing.TB, db *gorm.DB, key any, n int) []dlock.Holder {
	t.Helper()
	deadline := time.Now().Add(holdersTimeout)
	for {
		hs, err := dlock.Holders(context.Background(), db, key)
		if err != nil {
			t.Fatalf("Holders(%v) error = %v", key, err)
		}
		if len(hs) == n {
			return hs
		}
		if time.Now().After(deadline) {
			t.Fatalf("Holders(%v) = %v after %v, want %d rows", key, hs, holdersTimeout, n)
		}
		time.Sleep(pollStep)
	}
}

// wantHolders fails unless hs is exactly the granted sessions then the
// waiting ones (waiters in any order), with the mode shared.
func wantHolders(t testing.TB, hs []dlock.Holder, granted, waiting []int64, shared bool) {
	t.Helper()
	var g, w []int64
	for i := range hs {
		h := &hs[i]
		if h.Granted {
			if len(w) > 0 {
				t.Fatalf("Holders() = %+v: holder %d after a waiter", hs, i)
			}
			g = append(g, h.SessionID)
		} else {
			w = append(w, h.SessionID)
		}
		if h.Shared != shared && h.Granted {
			t.Fatalf("Holders()[%d].Shared = %v, want %v", i, h.Shared, shared)
		}
	}
	slices.Sort(g)
	slices.Sort(w)
	granted, waiting = slices.Sorted(slices.Values(granted)), slices.Sorted(slices.Values(waiting))
	if !slices.Equal(g, granted) || !slices.Equal(w, waiting) {
		t.Fatalf("Holders() granted %v, waiting %v; want granted %v, waiting %v (%+v)", g, w, granted, waiting, hs)
	}
}

// wantSessionFacts checks what the server tells of the test's own sessions.
func (b *testDB) wantSessionFacts(t testing.TB, h dlock.Holder, dbKey any) {
	t.Helper()
	if h.DBKey != dbKey {
		t.Errorf("Holder.DBKey = %#v, want %#v", h.DBKey, dbKey)
	}
	if h.User == "" || h.ClientAddr == "" || h.Database == "" || h.State == "" {
		t.Errorf("Holder = %+v, want User, ClientAddr, Database and State", h)
	}
	if now := time.Now(); h.Since.Before(now.Add(-time.Hour)) || h.Since.After(now.Add(time.Minute)) {
		t.Errorf("Holder.Since = %v, want about now (%v)", h.Since, now)
	}
	if !h.Granted && !strings.Contains(strings.ToLower(h.Query), "lock") {
		t.Errorf("waiter Holder.Query = %q, want the lock statement", h.Query)
	}
}

func TestHolders(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		ctx := context.Background()
		db := b.openLocked(t, dlock.Plugin{})
		key := b.UniqueKey(t)
		if hs, err := dlock.Holders(ctx, db, key); err != nil || len(hs) != 0 {
			t.Fatalf("Holders(free) = %v, %v; want [], nil", hs, err)
		}
		holder := newLock(t, db, key)
		mustAcquire(t, holder)
		hid := b.sessionOf(t, holder)
		w1, stop1 := b.startWaiter(t, db, key)
		w2, stop2 := b.startWaiter(t, db, key)

		hs := holdersWhen(t, db, key, 3)
		wantHolders(t, hs, []int64{hid}, []int64{w1, w2}, false)
		for _, h := range hs {
			b.wantSessionFacts(t, h, holder.DBKey())
		}
		// On the pinned tx of the holder, too: the statement runs on the pool.
		if got, err := dlock.Holders(ctx, holder.DB(), key); err != nil || len(got) != 3 {
			t.Fatalf("Holders(pinned tx) = %v, %v; want 3 rows", got, err)
		}

		stop1()
		stop2()
		if err := holder.Release(ctx); err != nil {
			t.Fatalf("Release() = %v", err)
		}
		if hs, err := dlock.Holders(ctx, db, key); err != nil || len(hs) != 0 {
			t.Fatalf("Holders(after release) = %+v, %v; want [], nil", hs, err)
		}
	})
}

func TestHoldersShared(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		if b.Dialect != dialectPostgres {
			t.Skip("shared locks are PostgreSQL's")
		}
		db := b.openLocked(t, dlock.Plugin{})
		key := b.UniqueKey(t)
		s1, s2 := newLock(t, db, key, dlock.Shared()), newLock(t, db, key, dlock.Shared())
		mustAcquire(t, s1)
		mustAcquire(t, s2)
		wid, _ := b.startWaiter(t, db, key)
		hs := holdersWhen(t, db, key, 3)
		wantHolders(t, hs, []int64{b.sessionOf(t, s1), b.sessionOf(t, s2)}, []int64{wid}, true)
		if hs[2].Shared {
			t.Fatalf("Holders()[2] = %+v, want an exclusive waiter", hs[2])
		}
	})
}

// randomInt returns a random positive int64, a lock key no other test uses.
func randomInt(t testing.TB) int64 {
	t.Helper()
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatalf("crypto/rand: %v", err)
	}
	return int64(binary.LittleEndian.Uint64(r[:]) >> 1)
}

func TestHoldersKeyKinds(t *testing.T) {
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		prefix := b.UniqueKey(t) + ":"
		plain := b.openLocked(t, dlock.Plugin{})
		prefixed := b.openLocked(t, dlock.Plugin{KeyPrefix: prefix})
		tests := []struct {
			name string
			key  any
		}{
			{"string", "job"},
			{"bytes", []byte{'j', 0xff, 0}},
			{"int", randomInt(t)},
			{"long string", strings.Repeat("long-", 30) + b.UniqueKey(t)},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx := context.Background()
				l := newLock(t, prefixed, tt.key)
				mustAcquire(t, l)
				hs, err := dlock.Holders(ctx, prefixed, tt.key)
				if err != nil || len(hs) != 1 {
					t.Fatalf("Holders(%v) = %+v, %v; want one holder", tt.key, hs, err)
				}
				wantHolders(t, hs, []int64{b.sessionOf(t, l)}, nil, false)
				b.wantSessionFacts(t, hs[0], l.DBKey())
				// Without the prefix a string key names another lock; an
				// integer key the same one.
				hs, err = dlock.Holders(ctx, plain, tt.key)
				want := 0
				if _, isInt := tt.key.(int64); isInt {
					want = 1
				}
				if err != nil || len(hs) != want {
					t.Fatalf("Holders(%v) without KeyPrefix = %+v, %v; want %d rows", tt.key, hs, err, want)
				}
			})
		}
	})
}

// rawConn returns a session of a plain *sql.DB, outside GORM and dlock.
func (b *testDB) rawConn(t testing.TB) (*sql.Conn, int64) {
	t.Helper()
	conn, err := b.Raw(t).Conn(context.Background())
	if err != nil {
		t.Fatalf("Conn: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn, b.SessionID(t, conn)
}

// TestHoldersSQLAlchemy finds locks taken the way sqlalchemy-dlock takes
// them: the int64 key in pg_advisory_lock, the name as a quoted string in
// GET_LOCK.
func TestHoldersSQLAlchemy(t *testing.T) {
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		ctx := context.Background()
		db := b.openLocked(t, dlock.Plugin{})
		key := b.UniqueKey(t)
		dbKey, err := dlock.DBKey(b.Dialect, key, "")
		if err != nil {
			t.Fatalf("DBKey() = %v", err)
		}
		lockSQL, unlockSQL := fmt.Sprintf("SELECT pg_advisory_lock(%d)", dbKey), fmt.Sprintf("SELECT pg_advisory_unlock(%d)", dbKey)
		if b.Dialect == dialectMySQL {
			lockSQL, unlockSQL = fmt.Sprintf("SELECT GET_LOCK('%s', 30)", key), fmt.Sprintf("SELECT RELEASE_LOCK('%s')", key)
		}
		holder, hid := b.rawConn(t)
		waiter, wid := b.rawConn(t)
		if b.Dialect == dialectPostgres {
			if _, err := holder.ExecContext(ctx, "SET application_name = 'nightly.py'"); err != nil {
				t.Fatalf("SET application_name: %v", err)
			}
		}
		if _, err := holder.ExecContext(ctx, lockSQL); err != nil {
			t.Fatalf("%s: %v", lockSQL, err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := waiter.ExecContext(ctx, lockSQL)
			if err == nil {
				_, err = waiter.ExecContext(ctx, unlockSQL)
			}
			done <- err
		}()
		hs := holdersWhen(t, db, key, 2)
		wantHolders(t, hs, []int64{hid}, []int64{wid}, false)
		for _, h := range hs {
			b.wantSessionFacts(t, h, dbKey)
		}
		if b.Dialect == dialectPostgres && hs[0].Application != "nightly.py" {
			t.Errorf("Holders()[0].Application = %q, want %q", hs[0].Application, "nightly.py")
		}
		if mine, ok := b.locksOf(t, db, dbKey); ok {
			wantHolders(t, mine, []int64{hid}, []int64{wid}, false)
		}
		if _, err := holder.ExecContext(ctx, unlockSQL); err != nil {
			t.Fatalf("%s: %v", unlockSQL, err)
		}
		if err := <-done; err != nil {
			t.Fatalf("waiter: %v", err)
		}
		if hs, err := dlock.Holders(ctx, db, key); err != nil || len(hs) != 0 {
			t.Fatalf("Holders(after release) = %+v, %v; want [], nil", hs, err)
		}
	})
}

func TestHoldersErrors(t *testing.T) {
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		ctx := context.Background()
		if _, err := dlock.Holders(ctx, b.Open(t), "k"); !errors.Is(err, dlock.ErrNotRegistered) {
			t.Errorf("Holders(unregistered) error = %v, want ErrNotRegistered", err)
		}
		if _, err := dlock.Locks(ctx, b.Open(t), ""); !errors.Is(err, dlock.ErrNotRegistered) {
			t.Errorf("Locks(unregistered) error = %v, want ErrNotRegistered", err)
		}
		db := b.openLocked(t, dlock.Plugin{})
		for _, k := range []any{nil, "", 1.5, true} {
			if _, err := dlock.Holders(ctx, db, k); !errors.Is(err, dlock.ErrInvalidKey) {
				t.Errorf("Holders(%#v) error = %v, want ErrInvalidKey", k, err)
			}
		}
		done, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := dlock.Holders(done, db, "k"); !errors.Is(err, context.Canceled) {
			t.Errorf("Holders(done ctx) error = %v, want context.Canceled", err)
		}
	})
}

func TestLocks(t *testing.T) {
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		ctx := context.Background()
		// Lower case: MySQL's metadata_locks shows names so.
		prefix := strings.ToLower(b.UniqueKey(t)) + ":"
		db := b.openLocked(t, dlock.Plugin{KeyPrefix: prefix})
		l := newLock(t, db, "job")
		mustAcquire(t, l)
		hid := b.sessionOf(t, l)
		wid, _ := b.startWaiter(t, db, "job")
		holdersWhen(t, db, "job", 2)

		filter := prefix
		if b.Dialect == dialectPostgres {
			if _, err := dlock.Locks(ctx, db, prefix); !errors.Is(err, dlock.ErrUnsupported) {
				t.Fatalf("Locks(%q) on PostgreSQL error = %v, want ErrUnsupported", prefix, err)
			}
			filter = ""
		}
		all, ok := b.locks(t, db, filter)
		if !ok {
			return
		}
		var mine []dlock.Holder
		for _, h := range all {
			if h.DBKey == l.DBKey() {
				mine = append(mine, h)
			}
		}
		wantHolders(t, mine, []int64{hid}, []int64{wid}, false)
		if b.Dialect == dialectMySQL && len(mine) != len(all) {
			t.Fatalf("Locks(%q) = %+v, want only the locks under the prefix", filter, all)
		}
	})
}

// locks returns Locks(db, prefix), or false when the server cannot list
// locks, after checking that the error says so: on MariaDB without the
// metadata_lock_info plugin, an error telling how to install it; on MySQL
// without performance_schema's metadata locks, one naming it.
func (b *testDB) locks(t testing.TB, db *gorm.DB, prefix string) ([]dlock.Holder, bool) {
	t.Helper()
	all, err := dlock.Locks(context.Background(), db, prefix)
	can, how := true, ""
	switch b.Name {
	case "mariadb":
		can, how = b.hasMetadataLockInfo(t), "INSTALL SONAME 'metadata_lock_info'"
	case "mysql":
		var on sql.NullBool
		q := "SELECT @@performance_schema = 1 AND EXISTS (SELECT 1 FROM performance_schema.setup_instruments" +
			" WHERE NAME = 'wait/lock/metadata/sql/mdl' AND ENABLED = 'YES')"
		if err := b.observer(t).QueryRowContext(context.Background(), q).Scan(&on); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		can, how = on.Bool, "performance_schema"
	}
	if !can {
		if !errors.Is(err, dlock.ErrUnsupported) || !strings.Contains(err.Error(), how) {
			t.Fatalf("Locks(%q) = %+v, %v; want ErrUnsupported saying %s", prefix, all, err, how)
		}
		t.Logf("Locks(%q) = %v (the documented answer on this server)", prefix, err)
		return nil, false
	}
	if err != nil {
		t.Fatalf("Locks(%q) error = %v", prefix, err)
	}
	return all, true
}

// locksOf returns the rows of Locks(db, "") for the lock dbKey, or false
// when the server cannot list locks (see locks).
func (b *testDB) locksOf(t testing.TB, db *gorm.DB, dbKey any) ([]dlock.Holder, bool) {
	t.Helper()
	all, ok := b.locks(t, db, "")
	var mine []dlock.Holder
	for i := range all {
		if all[i].DBKey == dbKey {
			mine = append(mine, all[i])
		}
	}
	return mine, ok
}

// TestHoldersNameCase: MariaDB compares lock names byte for byte, so a
// waiter for 'KEY' is not a waiter for 'key'.
func TestHoldersNameCase(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		if b.Name != "mariadb" {
			t.Skip("MariaDB's case-sensitive names")
		}
		ctx := context.Background()
		db := b.openLocked(t, dlock.Plugin{})
		lower := strings.ToLower(b.UniqueKey(t))
		upper := strings.ToUpper(lower)
		l := newLock(t, db, lower)
		mustAcquire(t, l)
		holder, hid := b.rawConn(t)
		waiter, wid := b.rawConn(t)
		if _, err := holder.ExecContext(ctx, fmt.Sprintf("SELECT GET_LOCK('%s', 0)", upper)); err != nil {
			t.Fatalf("GET_LOCK(%s): %v", upper, err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := waiter.ExecContext(ctx, fmt.Sprintf("SELECT GET_LOCK('%s', 30)", upper))
			done <- err
		}()
		wantHolders(t, holdersWhen(t, db, upper, 2), []int64{hid}, []int64{wid}, false)
		hs, err := dlock.Holders(ctx, db, lower)
		if err != nil {
			t.Fatalf("Holders(%q) error = %v", lower, err)
		}
		wantHolders(t, hs, []int64{b.sessionOf(t, l)}, nil, false)
		if _, err := holder.ExecContext(ctx, fmt.Sprintf("SELECT RELEASE_LOCK('%s')", upper)); err != nil {
			t.Fatalf("RELEASE_LOCK(%s): %v", upper, err)
		}
		if err := <-done; err != nil {
			t.Fatalf("waiter: %v", err)
		}
	})
}

// unprivileged creates a database user (MariaDB/MySQL) or login role
// (PostgreSQL) named dlock_np_<random> that may use the test database and
// nothing else: no PROCESS, no pg_read_all_stats. It returns a testDB that
// connects as that user, and its name. The user is dropped when the test
// ends, after the pools opened later are closed.
func (b *testDB) unprivileged(t testing.TB) (*testDB, string) {
	t.Helper()
	ctx := context.Background()
	var r [6]byte
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatalf("crypto/rand: %v", err)
	}
	name, password := "dlock_np_"+hex.EncodeToString(r[:3]), "pw"+hex.EncodeToString(r[3:])
	admin := b.observer(t)
	nb := &testDB{Name: b.Name, Dialect: b.Dialect, Version: b.Version, Source: b.Source}
	t.Cleanup(nb.closeObserver)
	var create, drop []string
	if b.Dialect == dialectMySQL {
		cfg, err := gomysql.ParseDSN(b.DSN)
		if err != nil {
			t.Fatalf("ParseDSN: %v", err)
		}
		for _, host := range []string{"%", "localhost"} {
			user := fmt.Sprintf("'%s'@'%s'", name, host)
			create = append(create, fmt.Sprintf("CREATE USER IF NOT EXISTS %s IDENTIFIED BY '%s'", user, password),
				"GRANT ALL ON `"+cfg.DBName+"`.* TO "+user)
			drop = append(drop, "DROP USER IF EXISTS "+user)
		}
		cfg.User, cfg.Passwd = name, password
		nb.DSN = cfg.FormatDSN()
	} else {
		create = []string{fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", name, password)}
		drop = []string{"DROP ROLE IF EXISTS " + name}
		if u, err := url.Parse(b.DSN); err == nil && u.Scheme != "" {
			u.User = url.UserPassword(name, password)
			nb.DSN = u.String()
		} else {
			nb.DSN = b.DSN + fmt.Sprintf(" user=%s password=%s", name, password)
		}
	}
	t.Cleanup(func() {
		for _, q := range drop {
			if _, err := admin.ExecContext(context.Background(), q); err != nil {
				t.Errorf("%s: %v", q, err)
			}
		}
	})
	for i, q := range create {
		if _, err := admin.ExecContext(ctx, q); err != nil {
			if i == 0 && accessDenied(err) {
				t.Skipf("the test user may not create users: %s: %v", q, err)
			}
			t.Fatalf("%s: %v", q, err)
		}
	}
	return nb, name
}

// TestHoldersUnprivileged: a user who may not see other users' sessions
// gets every holder and waiter with the hidden fields empty (PostgreSQL),
// or an error naming PROCESS (MySQL, MariaDB); never a shorter list.
func TestHoldersUnprivileged(t *testing.T) {
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		ctx := context.Background()
		nb, npUser := b.unprivileged(t)
		db := b.openLocked(t, dlock.Plugin{})
		npdb := nb.openLocked(t, dlock.Plugin{})
		key := b.UniqueKey(t)
		if hs, err := dlock.Holders(ctx, npdb, key); err != nil || len(hs) != 0 {
			t.Fatalf("Holders(free) as %s = %+v, %v; want [], nil (a free lock needs no privilege)", npUser, hs, err)
		}
		holder := newLock(t, db, key)
		mustAcquire(t, holder)
		hid := b.sessionOf(t, holder)
		w1, _ := b.startWaiter(t, db, key)
		w2, _ := nb.startWaiter(t, npdb, key)
		holdersWhen(t, db, key, 3)

		hs, err := dlock.Holders(ctx, npdb, key)
		all, lerr := dlock.Locks(ctx, npdb, "")
		if b.Dialect == dialectMySQL {
			if !errors.Is(err, dlock.ErrUnsupported) || !strings.Contains(err.Error(), "PROCESS") {
				t.Fatalf("Holders() as %s without PROCESS = %+v, %v; want an error naming PROCESS", npUser, hs, err)
			}
			if !errors.Is(lerr, dlock.ErrUnsupported) {
				t.Fatalf("Locks() as %s without PROCESS = %+v, %v; want ErrUnsupported", npUser, all, lerr)
			}
			if !strings.Contains(lerr.Error(), "PROCESS") && !strings.Contains(lerr.Error(), "metadata_lock_info") {
				t.Fatalf("Locks() as %s error = %v, want it to name PROCESS or the plugin", npUser, lerr)
			}
			// With PROCESS (on MariaDB through a default role, which
			// information_schema.USER_PRIVILEGES does not show) the same
			// user sees every session.
			b.grantProcess(t, npUser)
			pdb := nb.openLocked(t, dlock.Plugin{})
			hs, err := dlock.Holders(ctx, pdb, key)
			if err != nil {
				t.Fatalf("Holders() as %s with PROCESS error = %v", npUser, err)
			}
			wantHolders(t, hs, []int64{hid}, []int64{w1, w2}, false)
			if mine, ok := nb.locksOf(t, pdb, holder.DBKey()); ok {
				wantHolders(t, mine, []int64{hid}, []int64{w1, w2}, false)
				hs = append(hs, mine...)
			}
			for _, h := range hs {
				b.wantSessionFacts(t, h, holder.DBKey())
			}
			return
		}
		if err != nil || lerr != nil {
			t.Fatalf("Holders(), Locks() as %s = %v, %v; want complete answers", npUser, err, lerr)
		}
		wantHolders(t, hs, []int64{hid}, []int64{w1, w2}, false)
		var mine []dlock.Holder
		for _, h := range all {
			if h.DBKey == holder.DBKey() {
				mine = append(mine, h)
			}
		}
		wantHolders(t, mine, []int64{hid}, []int64{w1, w2}, false)
		for _, h := range append(hs, mine...) {
			if h.User == npUser {
				nb.wantSessionFacts(t, h, holder.DBKey())
				continue
			}
			// Another role's session: who and where, not what it does.
			if h.Query != "" || h.State != "" || h.ClientAddr != "" || !h.Since.IsZero() {
				t.Errorf("Holder of another role seen by %s = %+v, want Query, State, ClientAddr and Since empty", npUser, h)
			}
			if h.User == "" || h.Database == "" {
				t.Errorf("Holder of another role seen by %s = %+v, want User and Database", npUser, h)
			}
		}
	})
}

// accessDenied reports whether err is the server refusing a statement for
// want of a privilege: MySQL's errors 1044, 1045, 1142 and 1227, or
// PostgreSQL's SQLSTATE 42501.
func accessDenied(err error) bool {
	var my *gomysql.MySQLError
	if errors.As(err, &my) {
		return slices.Contains([]uint16{1044, 1045, 1142, 1227}, my.Number)
	}
	var pg interface{ SQLState() string }
	return errors.As(err, &pg) && pg.SQLState() == "42501"
}

// grantProcess gives the MySQL user made by unprivileged the PROCESS
// privilege for its next sessions: on MariaDB through a default role
// (dropped when the test ends), on MySQL directly.
func (b *testDB) grantProcess(t testing.TB, user string) {
	t.Helper()
	admin := b.observer(t)
	var stmts []string
	if b.Name == "mariadb" {
		role := user + "_r"
		stmts = append(stmts, "CREATE ROLE "+role, "GRANT PROCESS ON *.* TO "+role)
		for _, host := range []string{"%", "localhost"} {
			u := fmt.Sprintf("'%s'@'%s'", user, host)
			stmts = append(stmts, "GRANT "+role+" TO "+u, "SET DEFAULT ROLE "+role+" FOR "+u)
		}
		t.Cleanup(func() {
			if _, err := admin.ExecContext(context.Background(), "DROP ROLE IF EXISTS "+role); err != nil {
				t.Errorf("DROP ROLE %s: %v", role, err)
			}
		})
	} else {
		// MySQL's Locks reads performance_schema, which needs SELECT too.
		for _, host := range []string{"%", "localhost"} {
			stmts = append(stmts, fmt.Sprintf("GRANT PROCESS ON *.* TO '%s'@'%s'", user, host),
				fmt.Sprintf("GRANT SELECT ON performance_schema.* TO '%s'@'%s'", user, host))
		}
	}
	for _, q := range stmts {
		if _, err := admin.ExecContext(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// hasMetadataLockInfo reports whether MariaDB's metadata_lock_info plugin
// is active (Locks needs it there).
func (b *testDB) hasMetadataLockInfo(t testing.TB) bool {
	t.Helper()
	var n int
	q := "SELECT COUNT(*) FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'METADATA_LOCK_INFO' AND PLUGIN_STATUS = 'ACTIVE'"
	if err := b.observer(t).QueryRowContext(context.Background(), q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n == 1
}
