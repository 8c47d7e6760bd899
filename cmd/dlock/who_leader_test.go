package main

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/gormdlock/dlock"
)

// dlock who names the leader of an election: the Identity of the Elector
// whose session holds the lock.
func TestWhoLeader(t *testing.T) {
	eachServer(t, func(t *testing.T, s server) {
		db := openDB(t, s)
		key := uniqueKey(t)
		e, err := dlock.NewElector(db, key, dlock.Identity("scheduler-7"))
		if err != nil {
			t.Fatalf("NewElector: %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		leading := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- e.Run(ctx, func(ctx context.Context) error {
				close(leading)
				<-ctx.Done()
				return nil
			})
		}()
		defer func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Run() = %v, want context.Canceled", err)
			}
		}()
		<-leading
		l, _, err := e.Leader(context.Background())
		if err != nil {
			t.Fatalf("Leader: %v", err)
		}
		code, out, errOut := runCLI(context.Background(), "who", "-dsn", s.dsn, key)
		if code != exitOK {
			t.Fatalf("dlock who = %d, %q, %q; want 0", code, out, errOut)
		}
		wantLine(t, out, strconv.FormatInt(l.SessionID, 10), "held", "exclusive")
		wantLine(t, out, "leader:", "scheduler-7", "(session", strconv.FormatInt(l.SessionID, 10)+")", "since")
		if n := strings.Count(out, "\n"); n != 3 {
			t.Fatalf("dlock who printed %d lines, want 3: %q", n, out)
		}
	})
}
