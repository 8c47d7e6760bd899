package dlock_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/gormdlock/dlock"
)

func schedule(ctx context.Context) error { <-ctx.Done(); return nil }

// Run the scheduler on one instance of the fleet at a time: every instance
// runs the same Elector; the leader's ctx ends when it loses the lock, and
// another instance takes over.
func ExampleElector() {
	e, err := dlock.NewElector(db, "billing-scheduler")
	if err != nil {
		log.Fatal(err)
	}
	err = e.Run(ctx, func(ctx context.Context) error {
		return schedule(ctx) // runs until ctx ends: lost (ErrLockLost) or Run's ctx done
	})
	log.Print(err) // ctx.Err() once Run's ctx ended, or schedule's own error
}

// Ask who leads, from any process.
func ExampleElector_Leader() {
	e, err := dlock.NewElector(db, "billing-scheduler") // sends nothing; it need not run
	if err != nil {
		log.Fatal(err)
	}
	l, ok, err := e.Leader(ctx)
	switch {
	case err != nil:
		log.Fatal(err)
	case !ok:
		fmt.Println("nobody leads")
	default:
		fmt.Printf("%s leads on session %d since %v\n", l.Identity, l.SessionID, l.Since.Format(time.RFC3339))
	}
}
