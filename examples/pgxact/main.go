// Command pgxact shows a PostgreSQL transaction-level lock, dlock.Xact,
// inside db.Transaction.
//
// An Xact lock (pg_advisory_xact_lock) belongs to a transaction, not a
// session: the server releases it when the transaction commits or rolls
// back, and it cannot be released before. The program
//
//  1. takes the lock "ledger:close-month" with New(tx, key, dlock.Xact())
//     inside db.Transaction, shows that another session cannot take it,
//     that Release is refused (dlock.ErrUnsupported), and that the lock is
//     free as soon as the transaction has committed;
//  2. does the same with WithLock(..., dlock.Xact()), whose fn runs inside
//     a transaction, and fails it: the rollback frees the lock too;
//  3. takes the lock in a nested tx.Transaction (a savepoint) that fails:
//     the lock ends with the savepoint while the outer transaction goes on.
//
// MySQL and MariaDB have no transaction-level named locks: there New with
// Xact returns dlock.ErrUnsupported, and this example runs on PostgreSQL
// only.
//
// Run it with `make examples`, or `go run ./pgxact` in examples/.
package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gormdlock/dlock"
	"github.com/gormdlock/dlock/examples/internal/exampledb"
	"gorm.io/gorm"
)

const lockKey = "ledger:close-month"

// ledgerEntry is a row of dlock_example_ledger.
type ledgerEntry struct {
	ID   int64
	Note string
}

func (ledgerEntry) TableName() string { return "dlock_example_ledger" }

var errFailed = errors.New("the month does not balance")

func main() { exampledb.Main(run, exampledb.Postgres) }

func run(ctx context.Context, s *exampledb.Server) (err error) {
	db, err := s.Open(ctx)
	if err != nil {
		return err
	}
	db = db.WithContext(ctx)
	other, err := s.Open(ctx) // another process, to look at the lock
	if err != nil {
		return err
	}
	var lookErr error
	free := func() bool {
		ok, err := lockFree(ctx, other)
		lookErr = errors.Join(lookErr, err)
		return ok
	}
	defer func() { err = errors.Join(err, lookErr) }()

	m := db.Migrator()
	if err := m.DropTable(&ledgerEntry{}); err != nil {
		return err
	}
	if err := m.AutoMigrate(&ledgerEntry{}); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, m.DropTable(&ledgerEntry{})) }()

	// 1. New with Xact inside db.Transaction; COMMIT ends the lock.
	err = db.Transaction(func(tx *gorm.DB) error {
		lock, err := dlock.New(tx, lockKey, dlock.Xact())
		if err != nil {
			return err
		}
		ok, err := lock.Acquire(ctx, dlock.Timeout(2*time.Second))
		if err != nil {
			return err
		}
		if !ok {
			return dlock.ErrNotAcquired
		}
		s.Printf("1. transaction holds %s (pg_advisory_xact_lock(%d)); free to another session: %v",
			lockKey, lock.DBKey(), free())
		s.Printf("1. Release before the end of the transaction: %v", lock.Release(ctx))
		return tx.Create(&ledgerEntry{Note: "month closed"}).Error
	})
	if err != nil {
		return err
	}
	if !free() {
		return errors.New("the lock outlived its transaction")
	}
	s.Printf("1. committed; free to another session: true")

	// 2. WithLock with Xact runs fn in a transaction; ROLLBACK ends the lock.
	err = dlock.WithLock(ctx, db, lockKey, func(tx *gorm.DB) error {
		if err := tx.Create(&ledgerEntry{Note: "half a closing"}).Error; err != nil {
			return err
		}
		s.Printf("2. WithLock's transaction holds %s; free to another session: %v", lockKey, free())
		return errFailed
	}, dlock.Xact(), dlock.Timeout(2*time.Second))
	if !errors.Is(err, errFailed) {
		return fmt.Errorf("WithLock = %w, want %w", err, errFailed)
	}
	var n int64
	if err := db.Model(&ledgerEntry{}).Count(&n).Error; err != nil {
		return err
	}
	s.Printf("2. fn failed (%v): rolled back, %d ledger row(s) kept; free to another session: %v", err, n, free())

	// 3. A lock taken in a savepoint ends with the savepoint.
	err = db.Transaction(func(tx *gorm.DB) error {
		nested := tx.Transaction(func(tx *gorm.DB) error {
			lock, err := dlock.New(tx, lockKey, dlock.Xact())
			if err != nil {
				return err
			}
			if ok, err := lock.Acquire(ctx, dlock.NoWait()); err != nil || !ok {
				return fmt.Errorf("acquire in the savepoint: ok=%v: %w", ok, err)
			}
			s.Printf("3. savepoint holds %s; free to another session: %v", lockKey, free())
			return errFailed
		})
		s.Printf("3. savepoint rolled back (%v); outer transaction still open; free to another session: %v",
			nested, free())
		return tx.Create(&ledgerEntry{Note: "closing retried"}).Error
	})
	if err != nil {
		return err
	}
	s.Printf("3. outer transaction committed")
	return nil
}

// lockFree tries the lock once from another session and reports whether
// it was free (releasing it at once).
func lockFree(ctx context.Context, other *gorm.DB) (bool, error) {
	err := dlock.WithLock(ctx, other, lockKey, func(*gorm.DB) error { return nil }, dlock.NoWait())
	if errors.Is(err, dlock.ErrNotAcquired) {
		return false, nil
	}
	return err == nil, err
}
