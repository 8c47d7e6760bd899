// Command leader shows leader election with dlock, and the hand-over when
// the leader's database session dies.
//
// Three candidates, each with its own connection pool as if it were its
// own process, pin a session and wait in Acquire for the lock
// "leader:billing-scheduler". The server grants it to one of them: the
// leader. The others keep waiting; the server, not a polling loop, wakes
// one of them when the lock is free. The leader does its work in rounds
// and checks with Lock.Held that it still holds the lock.
//
// Then the program kills the leader's session from another connection
// (KILL on MySQL and MariaDB, pg_terminate_backend on PostgreSQL), as a
// crash, a network cut or a failover would. The server drops the lock with
// the session and hands it to a waiting candidate at once. The old leader
// learns it at its next check, an error matching dlock.ErrLockLost, stops
// leading and stands again on a new session. After two hand-overs the
// program cancels the context: the waiting candidates' Acquire returns
// dlock.ErrNotAcquired, and the last leader releases the lock.
//
// Run it with `make examples`, or `go run ./leader` in examples/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"sync"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/gormdlock/dlock"
	"github.com/gormdlock/dlock/examples/internal/exampledb"
	"gorm.io/gorm"
)

const (
	leaderKey  = "leader:billing-scheduler"
	candidates = 3
	handOvers  = 2
	round      = 100 * time.Millisecond // a leader's work round and Held check
	leadFor    = 350 * time.Millisecond // how long a leader leads before its session is killed
)

// elected is what a new leader announces.
type elected struct {
	candidate int
	session   int64 // CONNECTION_ID() or pg_backend_pid() of the session holding the lock
}

func main() {
	// go-sql-driver/mysql logs "unexpected EOF" when it reads from a
	// killed session; here that is the point, so keep the output clean.
	_ = gomysql.SetLogger(log.New(io.Discard, "", 0))
	exampledb.Main(run)
}

func run(ctx context.Context, s *exampledb.Server) error {
	admin, err := s.Open(ctx)
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()

	leaders := make(chan elected)
	var wg sync.WaitGroup
	errs := make([]error, candidates)
	for c := 1; c <= candidates; c++ {
		db, err := s.Open(ctx) // one pool per candidate, as separate processes have
		if err != nil {
			return err
		}
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := campaign(ctx, db, s, c, leaders); err != nil && ctx.Err() == nil {
					errs[c-1] = fmt.Errorf("candidate %d: %w", c, err)
					stop()
				}
			}
		})
	}

	var runErr error
	for n := 0; n <= handOvers && runErr == nil; n++ {
		select {
		case l := <-leaders:
			time.Sleep(leadFor)
			if n < handOvers {
				s.Printf("killing the session of candidate %d (session %d)", l.candidate, l.session)
				runErr = kill(ctx, admin, l.session)
			}
		case <-ctx.Done():
			runErr = fmt.Errorf("no leader elected: %w", ctx.Err())
		}
	}
	s.Printf("shutting down")
	stop()
	wg.Wait()
	return errors.Join(runErr, errors.Join(errs...))
}

// campaign stands for election on a new session: it waits for the lock,
// leads while it holds it, and returns when it loses it or ctx ends.
func campaign(ctx context.Context, db *gorm.DB, s *exampledb.Server, c int, leaders chan<- elected) error {
	return db.Connection(func(tx *gorm.DB) (err error) {
		session, err := sessionID(tx)
		if err != nil {
			return err
		}
		lock, err := dlock.New(tx, leaderKey)
		if err != nil {
			return err
		}
		s.Printf("candidate %d (session %d) waits for %s", c, session, leaderKey)
		ok, err := lock.Acquire(ctx) // waits until acquired or ctx ends
		if errors.Is(err, dlock.ErrNotAcquired) && ctx.Err() != nil {
			s.Printf("candidate %d stops waiting: %v", c, err)
			return nil
		}
		if err != nil || !ok {
			return fmt.Errorf("acquire: ok=%v: %w", ok, err)
		}
		// Close releases the lock if it is still held; after a lost
		// session it has nothing left to do.
		defer func() { err = errors.Join(err, lock.Close(context.WithoutCancel(ctx))) }()
		if ctx.Err() != nil {
			// A grant wins over a cancel: Acquire returned (true, nil).
			s.Printf("candidate %d got the lock as the program stopped; releasing it", c)
			return nil
		}

		s.Printf("candidate %d (session %d) is the leader", c, session)
		select {
		case leaders <- elected{c, session}:
		case <-ctx.Done():
			return nil
		}
		ticker := time.NewTicker(round)
		defer ticker.Stop()
		for n := 1; ; n++ {
			select {
			case <-ctx.Done():
				s.Printf("candidate %d steps down: shutting down", c)
				return nil
			case <-ticker.C:
			}
			held, err := lock.Held(ctx)
			switch {
			case errors.Is(err, dlock.ErrLockLost):
				s.Printf("candidate %d lost the lead: %v", c, err)
				return nil // stand again, on a new session
			case err != nil:
				return err
			case !held:
				s.Printf("candidate %d no longer holds the lock", c)
				return nil
			}
			s.Printf("candidate %d leads: round %d", c, n)
		}
	})
}

// sessionID returns the server's id of the session tx has pinned.
func sessionID(tx *gorm.DB) (int64, error) {
	q := "SELECT CONNECTION_ID()"
	if tx.Dialector.Name() == exampledb.Postgres {
		q = "SELECT pg_backend_pid()"
	}
	var id int64
	err := tx.Raw(q).Scan(&id).Error
	return id, err
}

// kill ends a session from another one, as a crash would.
func kill(ctx context.Context, admin *gorm.DB, session int64) error {
	admin = admin.WithContext(ctx)
	if admin.Dialector.Name() == exampledb.Postgres {
		var ok bool
		return admin.Raw("SELECT pg_terminate_backend(?)", session).Scan(&ok).Error
	}
	return admin.Exec(fmt.Sprintf("KILL %d", session)).Error
}
