// Command demo shows dlock serialising work across database sessions.
//
// For each database (MariaDB/MySQL, then PostgreSQL) four workers, each on
// its own database session, take turns holding one named lock, "dlock-demo".
// Every line carries the time since the start of that database's run, so
// you can see that one worker releases the lock before the next one holds it.
//
// The databases are found through the same environment variables as the
// integration tests:
//
//	DLOCK_TEST_MYSQL_DSN     default root@tcp(127.0.0.1:3306)/test
//	DLOCK_TEST_POSTGRES_DSN  default postgres://postgres@127.0.0.1:5432/test?sslmode=disable
//
// A database that cannot be reached is skipped. Run it with `make demo`;
// without local servers, `go run -tags containers ./demo` (in examples/)
// starts them in containers with testcontainers-go when a Docker engine
// runs.
package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gormdlock/dlock"
	"github.com/gormdlock/dlock/examples/internal/exampledb"
	"gorm.io/gorm"
)

const (
	lockName = "dlock-demo"
	workers  = 4
	rounds   = 2
	holdFor  = 100 * time.Millisecond
)

func main() { exampledb.Main(run) }

// run runs the workers on one database.
func run(ctx context.Context, s *exampledb.Server) error {
	db, err := s.Open(ctx) // gorm.Open and db.Use(dlock.Plugin{})
	if err != nil {
		return err
	}
	// Each worker pins one session while it waits for and holds the lock;
	// leave room for them plus a control connection.
	sqlDB, err := db.DB()
	if err != nil {
		return err
	}
	sqlDB.SetMaxOpenConns(8)

	s.Printf("%d workers, %d rounds each, one lock %q", workers, rounds, lockName)

	var holders, maxHolders atomic.Int32
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := 1; w <= workers; w++ {
		wg.Go(func() {
			for range rounds {
				err := dlock.WithLock(ctx, db, lockName, func(tx *gorm.DB) error {
					n := holders.Add(1)
					defer holders.Add(-1)
					for {
						m := maxHolders.Load()
						if n <= m || maxHolders.CompareAndSwap(m, n) {
							break
						}
					}
					s.Printf("worker %d holds %s", w, lockName)
					time.Sleep(holdFor)
					s.Printf("worker %d releases %s", w, lockName)
					return nil
				}, dlock.Timeout(5*time.Second))
				if err != nil {
					errs[w-1] = fmt.Errorf("worker %d: %w", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if m := maxHolders.Load(); m != 1 {
		return fmt.Errorf("%d workers held %s at the same time", m, lockName)
	}
	s.Printf("done: %d holds, never more than one holder at a time", workers*rounds)
	return nil
}
