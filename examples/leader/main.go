// Command leader shows leader election with dlock.Elector, and the
// hand-over when the leader's database session dies.
//
// Three candidates, each with its own connection pool as separate
// processes would have, run an Elector on "leader:billing-scheduler". One
// leads; the others wait in the server, which hands the lock to one of
// them when the leader's session ends. An operator's view, from a fourth
// pool, reads who leads with Elector.Leader (what `dlock who` prints).
// The program kills the leader's session twice (KILL, pg_terminate_backend),
// as a crash or a failover would: each time the old leader's context ends
// with dlock.ErrLockLost and another candidate leads. Then it cancels, and
// every Run returns with the lock released.
//
// Run it with `make examples`, or `go run ./leader` in examples/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/gormdlock/dlock"
	"github.com/gormdlock/dlock/examples/internal/exampledb"
	"gorm.io/gorm"
)

func main() {
	_ = gomysql.SetLogger(log.New(io.Discard, "", 0)) // a killed session makes the driver log
	exampledb.Main(run)
}

func run(ctx context.Context, s *exampledb.Server) error {
	key := "leader:billing-scheduler:" + strconv.Itoa(os.Getpid())
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	runErrs := make([]error, 3)
	leading := make(chan int, 3)
	var losses atomic.Int32 // leads whose ctx ended with ErrLockLost
	for c := range 3 {
		db, err := s.Open(ctx) // one pool per candidate
		if err != nil {
			return err
		}
		e, err := dlock.NewElector(db, key, dlock.Identity(fmt.Sprintf("candidate-%d", c)))
		if err != nil {
			return err
		}
		wg.Go(func() {
			runErrs[c] = e.Run(ctx, func(ctx context.Context) error {
				s.Printf("candidate %d leads", c)
				leading <- c
				<-ctx.Done() // the leader's work would run here, until ctx ends
				s.Printf("candidate %d stops leading: %v", c, context.Cause(ctx))
				if errors.Is(context.Cause(ctx), dlock.ErrLockLost) {
					losses.Add(1)
				}
				return ctx.Err()
			})
		})
	}

	operator, err := s.Open(ctx)
	if err != nil {
		return err
	}
	view, err := dlock.NewElector(operator, key) // for Leader only; it never runs
	if err != nil {
		return err
	}
	for kill := 0; kill <= 2; kill++ {
		var c int
		select {
		case c = <-leading:
		case <-time.After(5 * time.Second):
			return errors.New("no candidate leads within 5 s")
		}
		l, ok, err := view.Leader(ctx)
		if err != nil {
			return err
		}
		if want := fmt.Sprintf("candidate-%d", c); !ok || l.Identity != want {
			return fmt.Errorf("Leader() = %+v, %v; want %s", l, ok, want)
		}
		s.Printf("who leads: %s on session %d, since %s", l.Identity, l.SessionID, l.Since.Format("15:04:05.000"))
		if kill < 2 {
			s.Printf("killing session %d", l.SessionID)
			if err := killSession(ctx, operator, l.SessionID); err != nil {
				return err
			}
		}
	}
	s.Printf("shutting down")
	stop()
	wg.Wait()
	for _, err := range runErrs {
		if !errors.Is(err, context.Canceled) {
			return fmt.Errorf("a Run returned %w, want context.Canceled", err)
		}
	}
	if n := losses.Load(); n != 2 {
		return fmt.Errorf("%d leads ended with ErrLockLost, want 2 (one per kill)", n)
	}
	if hs, err := dlock.Holders(context.Background(), operator, key); err != nil || len(hs) > 0 {
		return fmt.Errorf("after shutdown: Holders = %v, %w; want none", hs, err)
	}
	s.Printf("every Run returned; nobody holds or waits for %s", key)
	return nil
}

// killSession ends a session from another one, as a crash would.
func killSession(ctx context.Context, operator *gorm.DB, id int64) error {
	operator = operator.WithContext(ctx)
	if operator.Dialector.Name() == exampledb.Postgres {
		var ok bool
		return operator.Raw("SELECT pg_terminate_backend(?)", id).Scan(&ok).Error
	}
	return operator.Exec(fmt.Sprintf("KILL %d", id)).Error
}
