package tests

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	"gorm.io/gorm"
)

type dlockRow struct {
	ID   int `gorm:"primaryKey"`
	Note string
}

// A session Lock made on the db.Connection tx works while a transaction
// is open on the session; a timed-out or cancelled wait inside it leaves
// the transaction usable.
func TestWaitInsideTransaction(t *testing.T) {
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		table := "dlock_tx_" + b.Name
		if err := db.Table(table).Migrator().CreateTable(&dlockRow{}); err != nil && !db.Migrator().HasTable(table) {
			t.Fatalf("create table: %v", err)
		}
		t.Cleanup(func() { _ = db.Migrator().DropTable(table) })
		key := b.UniqueKey(t)
		mustAcquire(t, newLock(t, db, key))

		var settingsBefore, settingsAfter string
		err := db.Connection(func(tx *gorm.DB) error {
			settingsBefore = sessionSettings(t, b, tx)
			l, err := dlock.New(tx, key)
			if err != nil {
				return err
			}
			own, err := dlock.New(tx, b.UniqueKey(t))
			if err != nil {
				return err
			}
			err = tx.Transaction(func(ttx *gorm.DB) error {
				if err := ttx.Table(table).Create(&dlockRow{ID: 1, Note: "before"}).Error; err != nil {
					return err
				}
				if ok, err := l.Acquire(context.Background(), dlock.Timeout(200*time.Millisecond)); ok || err != nil {
					t.Errorf("Acquire(Timeout) in tx = %v, %v; want false, nil", ok, err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				time.AfterFunc(150*time.Millisecond, cancel)
				if ok, err := l.Acquire(ctx); ok || !errors.Is(err, context.Canceled) {
					t.Errorf("cancelled Acquire in tx = %v, %v; want false, Canceled", ok, err)
				}
				if ok, err := own.Acquire(context.Background(), dlock.Timeout(time.Second)); !ok || err != nil {
					t.Errorf("free Acquire(Timeout) in tx = %v, %v; want true, nil", ok, err)
				}
				// The transaction is intact.
				return ttx.Table(table).Create(&dlockRow{ID: 2, Note: "after"}).Error
			})
			if err != nil {
				return err
			}
			// The session lock outlives the commit.
			if held, err := own.Held(context.Background()); !held || err != nil {
				t.Errorf("Held() after commit = %v, %v; want true, nil", held, err)
			}
			settingsAfter = sessionSettings(t, b, tx)
			return own.Release(context.Background())
		})
		if err != nil {
			t.Fatalf("Connection: %v", err)
		}
		var n int64
		if err := db.Table(table).Count(&n).Error; err != nil || n != 2 {
			t.Fatalf("rows after commit = %d, %v; want 2", n, err)
		}
		if settingsBefore != settingsAfter {
			t.Fatalf("session settings changed: %q -> %q", settingsBefore, settingsAfter)
		}
	})
}

// sessionSettings returns the session's timeout settings.
func sessionSettings(t testing.TB, b *testDB, tx *gorm.DB) string {
	t.Helper()
	q := "SELECT CONCAT(@@session.max_statement_time, '/', @@session.lock_wait_timeout)"
	if b.Dialect == dialectMySQL && !b.isMariaDB() {
		// MySQL has no max_statement_time; its statement limit is
		// max_execution_time (ms, SELECTs only).
		q = "SELECT CONCAT(@@session.max_execution_time, '/', @@session.lock_wait_timeout)"
	}
	if b.Dialect == dialectPostgres {
		q = "SELECT current_setting('lock_timeout') || '/' || current_setting('statement_timeout')"
	}
	var s string
	if err := tx.Raw(q).Scan(&s).Error; err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return s
}

// Every call leaves the session's timeout settings as they were, also
// when the user set them.
func TestSessionSettingsUnchanged(t *testing.T) {
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		tx, _ := pin(t, db)
		set := "SET SESSION max_statement_time = 0.5"
		if b.Dialect == dialectMySQL && !b.isMariaDB() {
			set = "SET SESSION max_execution_time = 500"
		}
		if b.Dialect == dialectPostgres {
			set = "SET lock_timeout = '700ms'"
		}
		if err := tx.Exec(set).Error; err != nil {
			t.Fatalf("%s: %v", set, err)
		}
		before := sessionSettings(t, b, tx)
		key := b.UniqueKey(t)
		mustAcquire(t, newLock(t, db, key))
		l, err := dlock.New(tx, key)
		if err != nil {
			t.Fatalf("New() = %v", err)
		}
		// The wait is longer than the inherited limit and still runs to
		// its own timeout.
		start := time.Now()
		if ok, err := l.Acquire(context.Background(), dlock.Timeout(1200*time.Millisecond)); ok || err != nil {
			t.Fatalf("Acquire(Timeout) = %v, %v; want false, nil", ok, err)
		}
		if d := time.Since(start); d < time.Second {
			t.Fatalf("wait cut short after %v by the session's own limit", d)
		}
		mine := newLock(t, db, b.UniqueKey(t))
		_ = mine
		own, err := dlock.New(tx, b.UniqueKey(t))
		if err != nil {
			t.Fatalf("New() = %v", err)
		}
		mustAcquire(t, own, dlock.Timeout(time.Second))
		if err := own.Release(context.Background()); err != nil {
			t.Fatalf("Release() = %v", err)
		}
		if after := sessionSettings(t, b, tx); after != before {
			t.Fatalf("settings %q after calls, want %q", after, before)
		}
	})
}

// PostgreSQL: shared locks coexist and exclude exclusive ones; Xact locks
// end with their transaction (and a rolled back savepoint).
func TestSharedAndXact(t *testing.T) {
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		key := b.UniqueKey(t)
		if b.Dialect != dialectPostgres {
			tx, _ := pin(t, db)
			if _, err := dlock.New(tx, key, dlock.Shared()); !errors.Is(err, dlock.ErrUnsupported) {
				t.Fatalf("New(Shared) on %s = %v, want ErrUnsupported", b.Name, err)
			}
			return
		}
		ctx := context.Background()
		s1, s2 := newLock(t, db, key, dlock.Shared()), newLock(t, db, key, dlock.Shared())
		ex := newLock(t, db, key)
		mustAcquire(t, s1)
		mustAcquire(t, s2, dlock.NoWait())
		if ok, err := ex.Acquire(ctx, dlock.NoWait()); ok || err != nil {
			t.Fatalf("exclusive Acquire with shared holders = %v, %v; want false, nil", ok, err)
		}
		if held, pids := b.heldOutside(t, s1); !held || len(pids) != 2 {
			t.Fatalf("shared holders = %v, want 2", pids)
		}
		for _, l := range []*dlock.Lock{s1, s2} {
			if err := l.Release(ctx); err != nil {
				t.Fatalf("Release(shared) = %v", err)
			}
		}
		mustAcquire(t, ex, dlock.NoWait())
		if ok, err := s1.Acquire(ctx, dlock.NoWait()); ok || err != nil {
			t.Fatalf("shared Acquire with an exclusive holder = %v, %v; want false, nil", ok, err)
		}
		if err := ex.Release(ctx); err != nil {
			t.Fatalf("Release() = %v", err)
		}

		// Xact: held inside the transaction, gone after it.
		xkey := b.UniqueKey(t)
		probe := newLock(t, db, xkey)
		var xl *dlock.Lock
		err := db.Transaction(func(tx *gorm.DB) error {
			l, err := dlock.New(tx, xkey, dlock.Xact())
			if err != nil {
				return err
			}
			xl = l
			if ok, err := l.Acquire(ctx, dlock.Timeout(time.Second)); !ok || err != nil {
				t.Errorf("Xact Acquire() = %v, %v", ok, err)
			}
			if err := l.Release(ctx); !errors.Is(err, dlock.ErrUnsupported) {
				t.Errorf("Xact Release() = %v, want ErrUnsupported", err)
			}
			b.wantHeldBy(t, probe, b.sessionOfTx(t, tx))
			if ok, err := probe.Acquire(ctx, dlock.NoWait()); ok || err != nil {
				t.Errorf("Acquire while Xact held elsewhere = %v, %v", ok, err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Transaction: %v", err)
		}
		b.wantFree(t, probe)
		if held, err := xl.Held(ctx); held || err != nil {
			t.Fatalf("Xact Held() after commit = %v, %v; want false, nil", held, err)
		}
		if err := xl.Close(ctx); err != nil {
			t.Fatalf("Xact Close() = %v", err)
		}
		// A timed-out Xact wait leaves the transaction usable.
		mustAcquire(t, probe)
		err = db.Transaction(func(tx *gorm.DB) error {
			l, err := dlock.New(tx, xkey, dlock.Xact())
			if err != nil {
				return err
			}
			if ok, err := l.Acquire(ctx, dlock.Timeout(100*time.Millisecond)); ok || err != nil {
				t.Errorf("busy Xact Acquire(Timeout) = %v, %v; want false, nil", ok, err)
			}
			var one int
			return tx.Raw("SELECT 1").Scan(&one).Error
		})
		if err != nil {
			t.Fatalf("Transaction after timed-out Xact wait: %v", err)
		}
		// Xact outside a transaction.
		ptx, _ := pin(t, db)
		if _, err := dlock.New(ptx, xkey, dlock.Xact()); !errors.Is(err, dlock.ErrNotInTransaction) {
			t.Fatalf("New(Xact) on a Connection tx = %v, want ErrNotInTransaction", err)
		}
		if _, err := dlock.New(db, xkey, dlock.Xact()); !errors.Is(err, dlock.ErrNotInTransaction) {
			t.Fatalf("New(Xact) on the pool = %v, want ErrNotInTransaction", err)
		}
		// WithLock with Xact.
		if err := probe.Release(ctx); err != nil {
			t.Fatalf("Release() = %v", err)
		}
		err = dlock.WithLock(ctx, db, xkey, func(tx *gorm.DB) error {
			b.wantHeldBy(t, probe, b.sessionOfTx(t, tx))
			return nil
		}, dlock.Xact(), dlock.Timeout(time.Second))
		if err != nil {
			t.Fatalf("WithLock(Xact) = %v", err)
		}
		b.wantFree(t, probe)
	})
}

// sessionOfTx returns the session id a gorm tx runs on.
func (b *testDB) sessionOfTx(t testing.TB, tx *gorm.DB) int64 {
	t.Helper()
	q := b.sessionIDQuery()
	var id int64
	if err := tx.Raw(q).Scan(&id).Error; err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return id
}
