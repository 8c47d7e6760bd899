package dlock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/gormdlock/dlock"
	"gorm.io/gorm"
)

// db stands for a *gorm.DB opened with gorm.io/driver/mysql or
// gorm.io/driver/postgres, so that the examples compile without a driver
// or a server. They have no Output and are compiled, not run.
var db *gorm.DB

var ctx = context.Background()

func nightlyReport(tx *gorm.DB) error { return nil }

// whoHolds stands for a function that prints dlock.Holders(ctx, db, key),
// as the README's Quick start has it.
func whoHolds(ctx context.Context, db *gorm.DB, key string) {}

// Register the plugin once, then run work under a lock with WithLock.
func Example() {
	if err := db.Use(dlock.Plugin{}); err != nil {
		log.Fatal(err) // sqlite, sqlserver, CockroachDB: ErrUnsupportedDialect
	}

	err := dlock.WithLock(ctx, db, "nightly-report", func(tx *gorm.DB) error {
		return nightlyReport(tx) // tx is the session that holds the lock
	}, dlock.Timeout(5*time.Second))
	switch {
	case errors.Is(err, dlock.ErrNotAcquired):
		log.Printf("not run: %v", err) // names the key and the Timeout that ran out
		whoHolds(ctx, db, "nightly-report")
	case err != nil:
		log.Fatal(err)
	}
}

// Pin a session with dlock.Connection, then acquire and release by hand.
// dlock.Connection is db.Connection that also releases, and reports, a
// lock left held when fn returns, so that it cannot go back to the pool.
func ExampleNew() {
	err := dlock.Connection(ctx, db, func(tx *gorm.DB) (err error) {
		lock, err := dlock.New(tx, "nightly-report")
		if err != nil {
			return err
		}
		ok, err := lock.Acquire(ctx, dlock.Timeout(5*time.Second))
		if err != nil {
			return err
		}
		if !ok {
			whoHolds(ctx, tx, "nightly-report")
			return fmt.Errorf("%w: %v is busy", dlock.ErrNotAcquired, lock.DBKey()) // someone else holds it
		}
		defer func() { err = errors.Join(err, lock.Close(ctx)) }()
		return nightlyReport(tx)
	})
	if err != nil {
		log.Printf("not run: %v", err)
	}
}

// Wait at most two seconds; the server does the waiting.
func ExampleLock_Acquire_timeout() {
	_ = dlock.Connection(ctx, db, func(tx *gorm.DB) (err error) {
		lock, err := dlock.New(tx, "billing:close-month")
		if err != nil {
			return err
		}
		ok, err := lock.Acquire(ctx, dlock.Timeout(2*time.Second))
		switch {
		case err != nil:
			return err // ErrNotAcquired with ctx.Err(), ErrDeadlock, ErrLockLost, ...
		case !ok:
			log.Print("still busy after 2s")
			return nil
		}
		defer func() { err = errors.Join(err, lock.Close(ctx)) }()
		return nil // the protected work, on tx
	})
}

// Try once and skip the work if another session holds the lock.
func ExampleLock_Acquire_noWait() {
	_ = dlock.Connection(ctx, db, func(tx *gorm.DB) (err error) {
		lock, err := dlock.New(tx, "cache-warmup")
		if err != nil {
			return err
		}
		ok, err := lock.Acquire(ctx, dlock.NoWait())
		if err != nil || !ok {
			return err // busy is (false, nil): nothing to do
		}
		defer func() { err = errors.Join(err, lock.Close(ctx)) }()
		return nil // the protected work, on tx
	})
}

// Run a function under a lock, giving up when the context ends.
func ExampleWithLock() {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := dlock.WithLock(ctx, db, int64(42), func(tx *gorm.DB) error {
		return tx.Exec("UPDATE accounts SET frozen = true WHERE id = ?", 42).Error
	})
	if errors.Is(err, dlock.ErrNotAcquired) {
		log.Print("gave up waiting: ", err)
	}
}

// A WithLock inside fn, called with fn's context, takes a session of its
// own for another key; for the key fn holds it returns ErrReentrant at once.
func ExampleWithLock_nested() {
	err := dlock.WithLock(ctx, db, "account:42", func(tx *gorm.DB) error {
		ctx := tx.Statement.Context // knows that "account:42" is held
		return dlock.WithLock(ctx, db, "account:42:statement", func(tx *gorm.DB) error {
			return nil // two sessions, one lock each
		})
	})
	if err != nil {
		log.Print(err)
	}
}

// Take a PostgreSQL shared lock: readers coexist, a writer excludes them.
func ExampleWithLock_shared() {
	err := dlock.WithLock(ctx, db, "catalog", func(tx *gorm.DB) error {
		var n int64
		return tx.Table("products").Count(&n).Error
	}, dlock.Shared(), dlock.Timeout(time.Second))
	if err != nil {
		log.Print(err) // ErrUnsupported on MySQL and MariaDB
	}
}

// Take a PostgreSQL transaction-level lock that ends with the transaction.
func ExampleXact() {
	err := db.Transaction(func(tx *gorm.DB) error {
		lock, err := dlock.New(tx, "ledger", dlock.Xact())
		if err != nil {
			return err
		}
		ok, err := lock.Acquire(ctx, dlock.Timeout(time.Second))
		if err != nil {
			return err
		}
		if !ok {
			return dlock.ErrNotAcquired
		}
		// No Release: COMMIT or ROLLBACK releases the lock.
		return tx.Exec("INSERT INTO ledger (note) VALUES (?)", "closed").Error
	})
	if err != nil {
		log.Print(err)
	}
}

// Catch a lock that fn forgot to release.
func ExampleConnection() {
	err := dlock.Connection(ctx, db, func(tx *gorm.DB) error {
		lock, err := dlock.New(tx, "import")
		if err != nil {
			return err
		}
		if _, err := lock.Acquire(ctx); err != nil {
			return err
		}
		return nil // forgot lock.Close
	})
	if errors.Is(err, dlock.ErrLeaked) {
		log.Print(err) // Connection has released "import" already
	}
}

// Set a Lock's default wait in New; an option given to Acquire replaces it
// for that call.
func ExampleTimeout() {
	_ = dlock.Connection(ctx, db, func(tx *gorm.DB) (err error) {
		lock, err := dlock.New(tx, "reindex", dlock.Timeout(10*time.Second))
		if err != nil {
			return err
		}
		ok, err := lock.Acquire(ctx) // waits at most 10s
		if err != nil || !ok {
			return err
		}
		if err := lock.Release(ctx); err != nil {
			return err
		}
		ok, err = lock.Acquire(ctx, dlock.Timeout(time.Second)) // this time at most 1s
		if err != nil || !ok {
			return err
		}
		return lock.Release(ctx)
	})
}

// Skip the work when another instance is doing it: WithLock returns
// ErrNotAcquired at once instead of waiting.
func ExampleNoWait() {
	err := dlock.WithLock(ctx, db, "cache-warmup", func(tx *gorm.DB) error {
		return nil // the protected work, on tx
	}, dlock.NoWait())
	if errors.Is(err, dlock.ErrNotAcquired) {
		log.Print("another instance is warming the cache")
	}
}

// Readers take a shared lock and run side by side; a writer takes the
// exclusive lock on the same key and waits for them. PostgreSQL only.
func ExampleShared() {
	read := func() error {
		return dlock.WithLock(ctx, db, "price-list", func(tx *gorm.DB) error {
			return nil // read the price list
		}, dlock.Shared(), dlock.Timeout(time.Second))
	}
	write := func() error {
		return dlock.WithLock(ctx, db, "price-list", func(tx *gorm.DB) error {
			return nil // rebuild the price list
		}, dlock.Timeout(30*time.Second))
	}
	if err := errors.Join(read(), write()); err != nil {
		log.Print(err)
	}
}

// Namespace string keys per application and bound how long a release may
// take.
func ExamplePlugin() {
	err := db.Use(dlock.Plugin{
		KeyPrefix:      "billing:", // "close-month" becomes "billing:close-month"
		ReleaseTimeout: 2 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
}

// A leader checks that its session still holds the lock before each round
// of work; a killed session shows as ErrLockLost.
func ExampleLock_Held() {
	_ = dlock.Connection(ctx, db, func(tx *gorm.DB) (err error) {
		lock, err := dlock.New(tx, "leader:scheduler")
		if err != nil {
			return err
		}
		if ok, err := lock.Acquire(ctx); err != nil || !ok {
			return err // ctx ended before this instance became the leader
		}
		defer func() { err = errors.Join(err, lock.Close(ctx)) }()
		for range 3 {
			held, err := lock.Held(ctx)
			if err != nil || !held {
				return err // errors.Is(err, dlock.ErrLockLost): another instance leads now
			}
			// one round of the leader's work, on tx
		}
		return nil
	})
}

// Stop the work as soon as the lock is lost: Done is closed when dlock
// finds the hold gone (or when it is released).
func ExampleLock_Done() {
	_ = dlock.Connection(ctx, db, func(tx *gorm.DB) (err error) {
		lock, err := dlock.New(tx, "reindex")
		if err != nil {
			return err
		}
		if ok, err := lock.Acquire(ctx); err != nil || !ok {
			return err
		}
		defer func() { err = errors.Join(err, lock.Close(ctx)) }()
		work, stop := context.WithCancel(ctx)
		defer stop()
		go func() {
			select {
			case <-lock.Done(): // lost: another instance may hold it now
				stop()
			case <-work.Done():
			}
		}()
		return tx.WithContext(work).Exec("REINDEX TABLE accounts").Error
	})
}

// In WithLock, fn's context ends when the lock is lost, with the reason
// as its cause.
func ExampleWithLock_lost() {
	err := dlock.WithLock(ctx, db, "nightly-report", func(tx *gorm.DB) error {
		ctx := tx.Statement.Context
		for range 100 {
			if ctx.Err() != nil {
				return context.Cause(ctx) // matches dlock.ErrLockLost
			}
			// one step of the work, on tx
		}
		return nil
	})
	if errors.Is(err, dlock.ErrLockLost) {
		log.Print("the lock was lost while the report ran: ", err)
	}
}
