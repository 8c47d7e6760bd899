package tests

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// recordingLogger records every statement GORM logs.
type recordingLogger struct {
	logger.Interface
	mu   sync.Mutex
	sqls []string
}

func (r *recordingLogger) LogMode(logger.LogLevel) logger.Interface { return r }
func (r *recordingLogger) Trace(_ context.Context, _ time.Time, fc func() (string, int64), _ error) {
	s, _ := fc()
	r.mu.Lock()
	r.sqls = append(r.sqls, s)
	r.mu.Unlock()
}

// Lock statements go straight to the session: GORM's callbacks and logger
// never see them, tx.Error stays nil, and DefaultContextTimeout does not
// apply to them.
func TestStraightToTheSession(t *testing.T) {
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		rec := &recordingLogger{Interface: logger.Discard}
		db := b.Open(t, func(c *gorm.Config) { c.Logger = rec; c.DefaultContextTimeout = 50 * time.Millisecond })
		if err := db.Use(dlock.Plugin{}); err != nil {
			t.Fatalf("Use() = %v", err)
		}
		key := b.UniqueKey(t)
		holder := newLock(t, b.openLocked(t, dlock.Plugin{}), key)
		mustAcquire(t, holder)
		rec.mu.Lock()
		rec.sqls = nil
		rec.mu.Unlock()
		err := db.Connection(func(tx *gorm.DB) error {
			l, err := dlock.New(tx, key)
			if err != nil {
				return err
			}
			// Longer than DefaultContextTimeout, and not cut by it.
			if ok, err := l.Acquire(context.Background(), dlock.Timeout(300*time.Millisecond)); ok || err != nil {
				t.Errorf("Acquire(Timeout) = %v, %v; want false, nil", ok, err)
			}
			if tx.Error != nil {
				t.Errorf("tx.Error = %v after a busy Acquire", tx.Error)
			}
			if err := holder.Release(context.Background()); err != nil {
				return err
			}
			if ok, err := l.Acquire(context.Background()); !ok || err != nil {
				t.Errorf("Acquire() = %v, %v", ok, err)
			}
			if _, err := l.Held(context.Background()); err != nil {
				t.Errorf("Held() = %v", err)
			}
			return l.Release(context.Background())
		})
		if err != nil {
			t.Fatalf("Connection: %v", err)
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, s := range rec.sqls {
			if strings.Contains(s, "GET_LOCK") || strings.Contains(s, "advisory") || strings.Contains(s, "RELEASE_LOCK") {
				t.Fatalf("GORM logged a lock statement: %s", s)
			}
		}
	})
}

// The server does the waiting: during a wait, the waiting session runs
// one statement, which is never re-sent (no client polling).
func TestNativeWaitNoPolling(t *testing.T) {
	needLongRun(t)
	for _, tc := range []struct {
		name string
		opts []dlock.Option
	}{{"blocking", nil}, {"Timeout", []dlock.Option{dlock.Timeout(time.Minute)}}} {
		t.Run(tc.name, func(t *testing.T) {
			eachBackend(t, func(t *testing.T, b *testDB) {
				db := b.openLocked(t, dlock.Plugin{})
				key := b.UniqueKey(t)
				holder := newLock(t, db, key)
				mustAcquire(t, holder)
				waiter := newLock(t, db, key)
				id := b.sessionOf(t, waiter)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				done := make(chan error, 1)
				go func() {
					ok, err := waiter.Acquire(ctx, tc.opts...)
					if !ok && err == nil {
						err = errors.New("not acquired")
					}
					done <- err
				}()
				waitUntilWaiting(t, b, waiter)
				first := statementOf(t, b, id)
				time.Sleep(700 * time.Millisecond)
				if again := statementOf(t, b, id); again != first {
					t.Fatalf("the waiting session ran %q, then %q: the wait was re-sent", first, again)
				}
				if err := holder.Release(context.Background()); err != nil {
					t.Fatalf("Release() = %v", err)
				}
				if err := <-done; err != nil {
					t.Fatalf("Acquire() = %v", err)
				}
			})
		})
	}
}

// statementOf identifies the statement session id is running: MariaDB's
// query id, or PostgreSQL's query_start.
func statementOf(t testing.TB, b *testDB, id int64) string {
	t.Helper()
	q := "SELECT CONCAT(QUERY_ID, ':', INFO) FROM information_schema.PROCESSLIST WHERE ID = ?"
	if b.Dialect == dialectPostgres {
		q = "SELECT query_start::text || ':' || query FROM pg_stat_activity WHERE pid = $1"
	}
	var s string
	if err := b.observer(t).QueryRowContext(context.Background(), q, id).Scan(&s); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return s
}

// Methods are safe from many goroutines at once; Acquired never blocks,
// even while an Acquire waits.
func TestConcurrentMethods(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		key := b.UniqueKey(t)
		holder := newLock(t, db, key)
		mustAcquire(t, holder)
		l := newLock(t, db, key)
		acquired := make(chan bool, 1)
		go func() {
			ok, _ := l.Acquire(context.Background(), dlock.Timeout(5*time.Second))
			acquired <- ok
		}()
		waitUntilWaiting(t, b, l)
		start := time.Now()
		for i := 0; i < 1000; i++ {
			if l.Acquired() {
				t.Fatalf("Acquired() = true while waiting")
			}
			_, _ = l.Key(), l.DBKey()
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Acquired() blocked: 1000 calls took %v", d)
		}
		// A second Acquire on the same Lock is refused at once.
		if ok, err := l.Acquire(context.Background(), dlock.NoWait()); ok || !errors.Is(err, dlock.ErrAlreadyAcquired) {
			t.Fatalf("concurrent Acquire() = %v, %v; want false, ErrAlreadyAcquired", ok, err)
		}
		if err := holder.Release(context.Background()); err != nil {
			t.Fatalf("Release() = %v", err)
		}
		if !<-acquired {
			t.Fatalf("waiter not acquired")
		}
		var wg sync.WaitGroup
		errs := make(chan error, 32)
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < 10; j++ {
					if _, err := l.Held(context.Background()); err != nil {
						errs <- err
					}
					ok, err := l.Acquire(context.Background(), dlock.NoWait())
					if err != nil && !errors.Is(err, dlock.ErrAlreadyAcquired) {
						errs <- err
					}
					if ok || j%3 == 0 {
						if err := l.Release(context.Background()); err != nil && !errors.Is(err, dlock.ErrNotHeld) {
							errs <- err
						}
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("concurrent call: %v", err)
		}
		_ = l.Close(context.Background())
		b.wantFree(t, l)
	})
}

// PostgreSQL transactions: an Xact lock taken in a savepoint ends with
// it; a release inside a failed transaction is a known error that leaves
// the lock held; Xact works on a PrepareStmt pool's transactions.
func TestPostgresTransactionEdges(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		if b.Dialect != dialectPostgres {
			t.Skip("PostgreSQL only")
		}
		db := b.openLocked(t, dlock.Plugin{})
		ctx := context.Background()
		key := b.UniqueKey(t)
		probe := newLock(t, db, key)
		errRollback := errors.New("roll back the savepoint")
		err := db.Transaction(func(tx *gorm.DB) error {
			err := tx.Transaction(func(sub *gorm.DB) error {
				l, err := dlock.New(sub, key, dlock.Xact())
				if err != nil {
					return err
				}
				mustAcquire(t, l)
				b.wantHeldBy(t, probe, b.sessionOfTx(t, sub))
				return errRollback
			})
			if !errors.Is(err, errRollback) {
				return err
			}
			b.wantFree(t, probe)
			return nil
		})
		if err != nil {
			t.Fatalf("Transaction: %v", err)
		}

		// A failed transaction on the pinned session.
		err = db.Connection(func(tx *gorm.DB) error {
			l, err := dlock.New(tx, key)
			if err != nil {
				return err
			}
			mustAcquire(t, l)
			_ = tx.Transaction(func(ttx *gorm.DB) error {
				_ = ttx.Exec("SELECT 1/0").Error // aborts the transaction
				err := l.Release(ctx)
				if err == nil || !strings.Contains(err.Error(), "still held") {
					t.Errorf("Release() in a failed transaction = %v, want an error saying it is still held", err)
				}
				if !l.Acquired() {
					t.Errorf("Acquired() = false, but the lock is still held")
				}
				return errRollback
			})
			b.wantHeldBy(t, probe, b.sessionOfTx(t, tx))
			return l.Release(ctx)
		})
		if err != nil {
			t.Fatalf("Connection: %v", err)
		}
		b.wantFree(t, probe)

		prepared := b.Open(t, func(c *gorm.Config) { c.PrepareStmt = true })
		if err := prepared.Use(dlock.Plugin{}); err != nil {
			t.Fatalf("Use() = %v", err)
		}
		err = prepared.Transaction(func(tx *gorm.DB) error {
			l, err := dlock.New(tx, key, dlock.Xact())
			if err != nil {
				return err
			}
			mustAcquire(t, l, dlock.Timeout(time.Second))
			b.wantHeldBy(t, probe, b.sessionOfTx(t, tx))
			return nil
		})
		if err != nil {
			t.Fatalf("PrepareStmt Transaction: %v", err)
		}
		b.wantFree(t, probe)
	})
}
