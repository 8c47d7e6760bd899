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
	"gorm.io/gorm"
)

// Bad input gets its sentinel and changes nothing.
func TestBadInput(t *testing.T) {
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		plain := b.Open(t)
		tx, _ := pin(t, plain)
		if _, err := dlock.New(tx, "k"); !errors.Is(err, dlock.ErrNotRegistered) {
			t.Fatalf("New() without the plugin = %v, want ErrNotRegistered", err)
		}
		if err := dlock.WithLock(context.Background(), plain, "k", func(*gorm.DB) error { return nil }); !errors.Is(err, dlock.ErrNotRegistered) {
			t.Fatalf("WithLock() without the plugin = %v, want ErrNotRegistered", err)
		}
		db := b.openLocked(t, dlock.Plugin{})
		if err := db.Use(dlock.Plugin{}); !errors.Is(err, gorm.ErrRegistered) {
			t.Fatalf("second db.Use() = %v, want gorm.ErrRegistered", err)
		}
		byPointer := b.Open(t)
		if err := byPointer.Use(&dlock.Plugin{KeyPrefix: "p:"}); err != nil {
			t.Fatalf("db.Use(&Plugin{}) = %v", err)
		}
		if _, err := dlock.New(db, "k"); !errors.Is(err, dlock.ErrNotPinned) {
			t.Fatalf("New(pool) = %v, want ErrNotPinned", err)
		}
		err := db.Transaction(func(ttx *gorm.DB) error {
			_, err := dlock.New(ttx, "k")
			if !errors.Is(err, dlock.ErrNotPinned) || !strings.Contains(err.Error(), "before Transaction") {
				t.Errorf("New(transaction tx) = %v, want ErrNotPinned naming db.Connection", err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Transaction: %v", err)
		}
		err = db.Connection(func(ctx *gorm.DB) error {
			ps := ctx.Session(&gorm.Session{PrepareStmt: true})
			if _, err := dlock.New(ps, "k"); !errors.Is(err, dlock.ErrNotPinned) {
				t.Errorf("New(PrepareStmt session) = %v, want ErrNotPinned", err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Connection: %v", err)
		}

		ptx, pconn := pin(t, db)
		// Nothing below may reach the server on ptx's session.
		quiet := b.quietCheck(t, pconn)
		for _, key := range []any{nil, "", []byte{}, true, 1.5, float32(2), struct{}{}, []int{1}} {
			if _, err := dlock.New(ptx, key); !errors.Is(err, dlock.ErrInvalidKey) {
				t.Errorf("New(%#v) = %v, want ErrInvalidKey", key, err)
			}
		}
		if b.Dialect == dialectPostgres {
			if _, err := dlock.New(ptx, uint64(1)<<63); !errors.Is(err, dlock.ErrInvalidKey) {
				t.Errorf("New(1<<63) = %v, want ErrInvalidKey", err)
			}
		}
		for _, opts := range [][]dlock.Option{{nil}, {dlock.NoWait(), dlock.Timeout(time.Second)}} {
			if _, err := dlock.New(ptx, "k", opts...); !errors.Is(err, dlock.ErrInvalidOption) {
				t.Errorf("New(%d bad options) = %v, want ErrInvalidOption", len(opts), err)
			}
		}
		l, err := dlock.New(ptx, b.UniqueKey(t))
		if err != nil {
			t.Fatalf("New() = %v", err)
		}
		for _, opts := range [][]dlock.Option{{nil}, {dlock.Shared()}, {dlock.Xact()}, {dlock.NoWait(), dlock.Timeout(time.Second)}} {
			if ok, err := l.Acquire(context.Background(), opts...); ok || !errors.Is(err, dlock.ErrInvalidOption) {
				t.Errorf("Acquire(misplaced option) = %v, %v; want false, ErrInvalidOption", ok, err)
			}
		}
		if l.Acquired() {
			t.Fatalf("Acquired() = true after refused calls")
		}
		quiet("bad keys, bad options and misplaced Acquire options")
		b.wantFree(t, l)
	})
}

// quietCheck marks the session of conn and returns a check that fails the
// test if any statement reached that session since: on MariaDB/MySQL the
// session's Questions counter (the check's own SHOW counts one), on
// PostgreSQL the session's last statement in pg_stat_activity, seen from
// another session.
func (b *testDB) quietCheck(t testing.TB, conn *sql.Conn) func(what string) {
	t.Helper()
	ctx := context.Background()
	if b.Dialect == dialectPostgres {
		id := b.SessionID(t, conn)
		marker := fmt.Sprintf("SELECT 'dlock quiet check %d'", id)
		if _, err := conn.ExecContext(ctx, marker); err != nil {
			t.Fatalf("%s: %v", marker, err)
		}
		return func(what string) {
			t.Helper()
			var last string
			if err := b.observer(t).QueryRowContext(ctx, "SELECT query FROM pg_stat_activity WHERE pid = $1", id).Scan(&last); err != nil {
				t.Fatalf("pg_stat_activity: %v", err)
			}
			if last != marker {
				t.Fatalf("%s sent %q to the session; want nothing sent", what, last)
			}
		}
	}
	questions := func() int64 {
		t.Helper()
		var name string
		var n int64
		if err := conn.QueryRowContext(ctx, "SHOW SESSION STATUS LIKE 'Questions'").Scan(&name, &n); err != nil {
			t.Fatalf("SHOW SESSION STATUS: %v", err)
		}
		return n
	}
	before := questions()
	return func(what string) {
		t.Helper()
		if sent := questions() - before - 1; sent != 0 {
			t.Fatalf("%s sent %d statements to the session; want nothing sent", what, sent)
		}
	}
}

// Keys of every shape name a lock that excludes other sessions, and the
// name survives sql_mode settings that change string-literal parsing.
func TestAwkwardKeys(t *testing.T) {
	t.Parallel() // distinct keys, no duration measured
	keys := []any{
		`it's a "quoted" \ key`,
		`\'; SELECT 1; --`,
		"ключ-юникод",
		"emoji 🔒 key",
		strings.Repeat("long-", 40),
		[]byte{0xff, 0x00, 0xfe, '\''},
		int64(-42),
		uint8(7),
	}
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		tx, _ := pin(t, db)
		if b.Dialect == dialectMySQL {
			if err := tx.Exec("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES,ANSI_QUOTES')").Error; err != nil {
				t.Fatalf("set sql_mode: %v", err)
			}
		}
		suffix := b.UniqueKey(t)
		for _, k := range keys {
			if s, ok := k.(string); ok {
				k = s + suffix
			}
			l, err := dlock.New(tx, k)
			if err != nil {
				t.Fatalf("New(%q) = %v", k, err)
			}
			mustAcquire(t, l)
			b.wantHeldBy(t, l, b.sessionOf(t, l))
			other := newLock(t, db, k)
			if ok, err := other.Acquire(context.Background(), dlock.NoWait()); ok || err != nil {
				t.Fatalf("other session Acquire(%q) = %v, %v; want false, nil", k, ok, err)
			}
			if err := l.Release(context.Background()); err != nil {
				t.Fatalf("Release(%q) = %v", k, err)
			}
			b.wantFree(t, l)
		}
	})
}

// Goroutines on their own sessions race for one key: exactly one holds
// it at a time.
func TestManySessionsOneWinnerAtATime(t *testing.T) {
	const workers, rounds = 50, 3
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		sqlDB, _ := db.DB()
		sqlDB.SetMaxOpenConns(workers + 5)
		key := b.UniqueKey(t)
		var inside, maxInside, total atomic.Int32
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := 0; r < rounds; r++ {
					err := dlock.WithLock(context.Background(), db, key, func(*gorm.DB) error {
						n := inside.Add(1)
						for {
							m := maxInside.Load()
							if n <= m || maxInside.CompareAndSwap(m, n) {
								break
							}
						}
						total.Add(1)
						time.Sleep(time.Millisecond)
						inside.Add(-1)
						return nil
					}, dlock.Timeout(time.Minute))
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("WithLock() = %v", err)
		}
		if got := maxInside.Load(); got != 1 {
			t.Fatalf("at most %d holders at once, want 1", got)
		}
		if got := total.Load(); got != workers*rounds {
			t.Fatalf("%d critical sections ran, want %d", got, workers*rounds)
		}
	})
}

// Two sessions waiting for each other's lock: the server breaks the
// deadlock and one Acquire fails with ErrDeadlock (also ErrNotAcquired);
// its session and its other lock survive.
func TestDeadlock(t *testing.T) {
	t.Parallel() // distinct keys, no duration measured
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		k1, k2 := b.UniqueKey(t), b.UniqueKey(t)
		txA, _ := pin(t, db)
		txB, _ := pin(t, db)
		a1 := mustNew(t, txA, k1)
		a2 := mustNew(t, txA, k2)
		b2 := mustNew(t, txB, k2)
		b1 := mustNew(t, txB, k1)
		mustAcquire(t, a1)
		mustAcquire(t, b2)
		type result struct {
			ok  bool
			err error
		}
		ra, rb := make(chan result, 1), make(chan result, 1)
		go func() {
			ok, err := a2.Acquire(context.Background(), dlock.Timeout(10*time.Second))
			ra <- result{ok, err}
		}()
		waitUntilWaiting(t, b, a2)
		go func() {
			ok, err := b1.Acquire(context.Background(), dlock.Timeout(10*time.Second))
			rb <- result{ok, err}
		}()
		// Whichever loses must fail with ErrDeadlock; the other then waits
		// until the loser's session releases its first lock.
		var loser result
		var winnerCh chan result
		var loserFirst, winnerFirst *dlock.Lock
		select {
		case loser = <-ra:
			winnerCh, loserFirst, winnerFirst = rb, a1, b2
		case loser = <-rb:
			winnerCh, loserFirst, winnerFirst = ra, b2, a1
		case <-time.After(15 * time.Second):
			t.Fatalf("no deadlock detected")
		}
		if loser.ok || !errors.Is(loser.err, dlock.ErrDeadlock) || !errors.Is(loser.err, dlock.ErrNotAcquired) {
			t.Fatalf("deadlocked Acquire() = %v, %v; want false, ErrDeadlock", loser.ok, loser.err)
		}
		if held, err := loserFirst.Held(context.Background()); !held || err != nil {
			t.Fatalf("loser's first lock Held() = %v, %v; want true, nil", held, err)
		}
		if err := loserFirst.Release(context.Background()); err != nil {
			t.Fatalf("Release() = %v", err)
		}
		if w := <-winnerCh; !w.ok || w.err != nil {
			t.Fatalf("winner Acquire() = %v, %v; want true, nil", w.ok, w.err)
		}
		for _, l := range []*dlock.Lock{winnerFirst, a2, b1} {
			if err := l.Close(context.Background()); err != nil {
				t.Fatalf("Close() = %v", err)
			}
		}
	})
}

// When no control connection can be had, cancelling a wait discards the
// session: the error matches ErrNotAcquired and ErrLockLost, and the
// session's locks are freed, not returned to the pool.
func TestCancelWithoutControlConnectionDiscards(t *testing.T) {
	needLongRun(t)
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		key := b.UniqueKey(t)
		holder := newLock(t, db, key)
		mustAcquire(t, holder)

		small := b.openLocked(t, dlock.Plugin{})
		sqlDB, _ := small.DB()
		sqlDB.SetMaxOpenConns(1)
		tx, _ := pin(t, small)
		own := mustNew(t, tx, b.UniqueKey(t))
		mustAcquire(t, own)
		waiter := mustNew(t, tx, key)
		ctx, cancel := context.WithCancel(context.Background())
		const cancelAt = 200 * time.Millisecond
		time.AfterFunc(cancelAt, cancel)
		start := time.Now()
		ok, err := waiter.Acquire(ctx)
		// The cancel finds no control connection; dlock tries for 1 s,
		// then discards the session.
		took := time.Since(start)
		if took < cancelAt+cancelGiveUp-10*time.Millisecond {
			t.Fatalf("Acquire() returned after %v, before the cancel (%v) + the 1 s try for a control connection", took, cancelAt)
		}
		within(t, "Acquire cancelled at 200ms without a control connection", took, cancelAt+cancelGiveUp, `"discarded after 1 s"`)
		if ok || !errors.Is(err, dlock.ErrNotAcquired) || !errors.Is(err, dlock.ErrLockLost) || !errors.Is(err, context.Canceled) {
			t.Fatalf("Acquire() = %v, %v; want false, ErrNotAcquired+ErrLockLost+Canceled", ok, err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			held, _ := b.heldOutside(t, own)
			if !held {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the discarded session's lock is still held")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := own.Release(context.Background()); !errors.Is(err, dlock.ErrLockLost) {
			t.Fatalf("Release() on the discarded session = %v, want ErrLockLost", err)
		}
	})
}
