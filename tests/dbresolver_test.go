package tests

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	"gorm.io/gorm"
	"gorm.io/plugin/dbresolver"
)

// openResolved opens a pool with dbresolver registered, its source and its
// replica each a pool of its own on the same server (so a statement that
// leaves the locked session shows another session id), then dlock.
func (b *testDB) openResolved(t *testing.T) *gorm.DB {
	t.Helper()
	db := b.Open(t)
	r := dbresolver.Register(dbresolver.Config{
		Sources:  []gorm.Dialector{b.Dialector()},
		Replicas: []gorm.Dialector{b.Dialector()},
	})
	if err := db.Use(r); err != nil {
		t.Fatalf("db.Use(dbresolver): %v", err)
	}
	t.Cleanup(func() {
		_ = r.Call(func(p gorm.ConnPool) error {
			if c, ok := p.(interface{ Close() error }); ok {
				_ = c.Close()
			}
			return nil
		})
	})
	if err := db.Use(dlock.Plugin{}); err != nil {
		t.Fatalf("db.Use(dlock.Plugin{}): %v", err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatalf("db.DB(): %v", err)
	}
	checkPoolIdle(t, sqlDB)
	return db
}

// holderOf returns the id of the session holding key's dlock lock, seen
// from an independent session.
func (b *testDB) holderOf(t *testing.T, db *gorm.DB, key string) int64 {
	t.Helper()
	probe := newLock(t, db, key)
	held, ids := b.heldOutside(t, probe)
	if !held || len(ids) != 1 {
		t.Fatalf("lock %q held=%v by %v, want one holder", key, held, ids)
	}
	return ids[0]
}

// rawIDOf returns the session id tx.Raw reads.
func (b *testDB) rawIDOf(t *testing.T, tx *gorm.DB) int64 {
	t.Helper()
	var id int64
	if err := tx.Raw(b.sessionIDQuery()).Scan(&id).Error; err != nil {
		t.Fatalf("tx.Raw(%s): %v", b.sessionIDQuery(), err)
	}
	return id
}

// execIDOf returns the id of the session a tx.Exec runs on: the Exec takes
// a raw server lock, an independent session names its holder, a second
// Exec releases it. 0: nobody holds it (the release went elsewhere too).
func (b *testDB) execIDOf(t *testing.T, tx *gorm.DB) int64 {
	t.Helper()
	var buf [8]byte
	_, _ = rand.Read(buf[:])
	var id int64
	if b.Dialect == dialectPostgres {
		k := int64(binary.BigEndian.Uint64(buf[:]))
		if err := tx.Exec("SELECT pg_advisory_lock(?)", k).Error; err != nil {
			t.Fatalf("tx.Exec(pg_advisory_lock): %v", err)
		}
		if _, pids := b.HeldByPg(t, k); len(pids) == 1 {
			id = pids[0]
		}
		if err := tx.Exec("SELECT pg_advisory_unlock(?)", k).Error; err != nil {
			t.Fatalf("tx.Exec(pg_advisory_unlock): %v", err)
		}
		return id
	}
	name := b.UniqueKey(t)
	if err := tx.Exec("DO GET_LOCK(?, 0)", name).Error; err != nil {
		t.Fatalf("tx.Exec(GET_LOCK): %v", err)
	}
	_, id = b.HeldByMySQL(t, name)
	if err := tx.Exec("DO RELEASE_LOCK(?)", name).Error; err != nil {
		t.Fatalf("tx.Exec(RELEASE_LOCK): %v", err)
	}
	return id
}

// TestDBResolverWithLock: under dbresolver, tx.Raw and tx.Exec in fn of
// WithLock run on the locked session, and so does fn's tx.Transaction.
func TestDBResolverWithLock(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openResolved(t)
		key := b.UniqueKey(t)
		err := dlock.WithLock(context.Background(), db, key, func(tx *gorm.DB) error {
			holder := b.holderOf(t, db, key)
			if got := b.rawIDOf(t, tx); got != holder {
				t.Errorf("tx.Raw in fn ran on session %d, want the locked session %d", got, holder)
			}
			if got := b.execIDOf(t, tx); got != holder {
				t.Errorf("tx.Exec in fn ran on session %d, want the locked session %d", got, holder)
			}
			if err := tx.Transaction(func(tx *gorm.DB) error {
				if got := b.rawIDOf(t, tx); got != holder {
					t.Errorf("tx.Raw in fn's Transaction ran on session %d, want %d", got, holder)
				}
				return nil
			}); err != nil {
				t.Errorf("Transaction in fn: %v", err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("WithLock() = %v", err)
		}
	})
}

// TestDBResolverConnection: the same in fn of dlock.Connection, for a
// Lock made on its tx after statements ran on it.
func TestDBResolverConnection(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openResolved(t)
		key := b.UniqueKey(t)
		ctx := context.Background()
		err := dlock.Connection(ctx, db, func(tx *gorm.DB) error {
			before := b.rawIDOf(t, tx)
			l, err := dlock.New(tx, key)
			if err != nil {
				t.Fatalf("New() after tx.Raw = %v", err)
			}
			defer func() { _ = l.Close(ctx) }()
			if ok, err := l.Acquire(ctx); !ok || err != nil {
				t.Fatalf("Acquire() = %v, %v", ok, err)
			}
			holder := b.holderOf(t, db, key)
			if before != holder {
				t.Errorf("tx.Raw before the lock ran on session %d, want the locked session %d", before, holder)
			}
			if got := b.rawIDOf(t, tx); got != holder {
				t.Errorf("tx.Raw ran on session %d, want the locked session %d", got, holder)
			}
			if got := b.execIDOf(t, tx); got != holder {
				t.Errorf("tx.Exec ran on session %d, want the locked session %d", got, holder)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Connection() = %v", err)
		}
	})
}

// TestDBResolverPlainConnection: the tx of a plain db.Connection stays
// pinned after a tx.Exec: New works on it, and a WithLock on that tx for
// the key its session holds is refused at once (ErrReentrant) instead of
// waiting for itself, which it would do on any other session.
func TestDBResolverPlainConnection(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openResolved(t)
		key := b.UniqueKey(t)
		ctx := context.Background()
		err := db.WithContext(ctx).Connection(func(tx *gorm.DB) error {
			l, err := dlock.New(tx, key)
			if err != nil {
				t.Fatalf("New() = %v", err)
			}
			defer func() { _ = l.Close(ctx) }()
			if ok, err := l.Acquire(ctx); !ok || err != nil {
				t.Fatalf("Acquire() = %v, %v", ok, err)
			}
			if err := tx.Exec("SELECT 1").Error; err != nil {
				t.Fatalf("tx.Exec: %v", err)
			}
			if l2, err := dlock.New(tx, b.UniqueKey(t)); err != nil {
				t.Errorf("New() after tx.Exec = %v, want a Lock on the pinned session", err)
			} else {
				_ = l2.Close(ctx)
			}
			ran := false
			err = dlock.WithLock(ctx, tx, key, func(*gorm.DB) error {
				ran = true
				return nil
			}, dlock.Timeout(time.Second))
			if !errors.Is(err, dlock.ErrReentrant) || ran {
				t.Errorf("WithLock on the tx for its held key after tx.Exec = %v (fn ran: %v), want ErrReentrant", err, ran)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Connection() = %v", err)
		}
	})
}

// TestDBResolverModels: Create, Update, Query and Delete in fn of WithLock
// run on the locked session too: they find the temporary table, which
// only that session has, and each write's implicit transaction is opened
// there.
func TestDBResolverModels(t *testing.T) {
	type resolvedRow struct {
		ID int64
		N  int
	}
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openResolved(t)
		err := dlock.WithLock(context.Background(), db, b.UniqueKey(t), func(tx *gorm.DB) error {
			if err := tx.Exec("CREATE TEMPORARY TABLE resolved_rows (id bigint PRIMARY KEY, n int)").Error; err != nil {
				t.Fatalf("CREATE TEMPORARY TABLE: %v", err)
			}
			rows := func() *gorm.DB { return tx.Table("resolved_rows") }
			if err := rows().Create(&resolvedRow{ID: 1, N: 1}).Error; err != nil {
				t.Errorf("Create: %v", err)
			}
			if err := rows().Where("id = ?", 1).Update("n", 2).Error; err != nil {
				t.Errorf("Update: %v", err)
			}
			var got resolvedRow
			if err := rows().First(&got, 1).Error; err != nil || got.N != 2 {
				t.Errorf("First = %+v, %v; want N 2", got, err)
			}
			if err := rows().Delete(&resolvedRow{}, 1).Error; err != nil {
				t.Errorf("Delete: %v", err)
			}
			return tx.Exec("DROP TABLE resolved_rows").Error
		})
		if err != nil {
			t.Fatalf("WithLock() = %v", err)
		}
	})
}
