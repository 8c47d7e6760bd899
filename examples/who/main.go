// Command who shows dlock.Holders answering "who holds this lock, and who
// waits for it?" while two workers, each with its own connection pool as
// separate processes would have, contend for one lock.
//
// Worker "report-1" takes the lock and holds it for a moment; worker
// "report-2" waits for it. Meanwhile an operator's view (the same rows
// `dlock who` prints) is read with Holders from a third pool: one session
// holding, one waiting. Then report-1 releases, report-2 holds, and once
// both are done nobody is left.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/gormdlock/dlock"
	"github.com/gormdlock/dlock/examples/internal/exampledb"
	"gorm.io/gorm"
)

const holdFor = 500 * time.Millisecond

func main() { exampledb.Main(run) }

func run(ctx context.Context, s *exampledb.Server) error {
	key := "dlock-example-who-" + strconv.Itoa(os.Getpid())
	operator, err := s.Open(ctx)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, name := range []string{"report-1", "report-2"} {
		db, err := s.Open(ctx)
		if err != nil {
			return err
		}
		wg.Go(func() { errs[i] = work(ctx, s, db, key, name) })
		if i == 0 {
			// report-1 first, so that report-2 is the one waiting.
			if err := waitUntil(ctx, operator, key, 1, 0); err != nil {
				return err
			}
		}
	}
	if err := waitUntil(ctx, operator, key, 1, 1); err != nil {
		return err
	}
	show(ctx, s, operator, key, "while report-1 holds and report-2 waits")
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	show(ctx, s, operator, key, "after both are done")
	return nil
}

// work takes the lock on a session of db, holds it for holdFor, releases.
func work(ctx context.Context, s *exampledb.Server, db *gorm.DB, key, name string) error {
	return dlock.WithLock(ctx, db, key, func(tx *gorm.DB) error {
		s.Printf("%s holds %s", name, key)
		time.Sleep(holdFor)
		s.Printf("%s releases %s", name, key)
		return nil
	}, dlock.Timeout(10*time.Second))
}

// waitUntil polls Holders until it shows granted holders and waiting
// waiters.
func waitUntil(ctx context.Context, db *gorm.DB, key string, granted, waiting int) error {
	for {
		hs, err := dlock.Holders(ctx, db, key)
		if err != nil {
			return err
		}
		g := 0
		for i := range hs {
			if hs[i].Granted {
				g++
			}
		}
		if g == granted && len(hs)-g == waiting {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("Holders(%s) = %d held, %d waiting; want %d, %d: %w", key, g, len(hs)-g, granted, waiting, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// show prints what Holders says of key.
func show(ctx context.Context, s *exampledb.Server, db *gorm.DB, key, when string) {
	hs, err := dlock.Holders(ctx, db, key)
	if err != nil {
		s.Printf("Holders: %v", err)
		return
	}
	s.Printf("Holders(%s) %s: %d rows", key, when, len(hs))
	for i := range hs {
		h := &hs[i]
		state := "waiting"
		if h.Granted {
			state = "held"
		}
		s.Printf("  session %d %s by %s from %s, %s since %s",
			h.SessionID, state, h.User, h.ClientAddr, h.State, h.Since.Format(time.TimeOnly))
	}
}
