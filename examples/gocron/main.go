// Command gocron runs gocron v2 schedulers in a fleet where only the
// leader runs the jobs, with a dlock.Elector behind gocron's Elector
// interface.
//
// Three instances, each with its own connection pool as separate
// processes would have, schedule the same job every 100 ms. Each runs a
// dlock.Elector in the background and hands gocron the adapter below
// (gocron.WithDistributedElector): gocron asks it before each run, and
// only the leader's scheduler runs the job. After a second the leading
// instance shuts down; another one is elected and its scheduler takes
// over. The program checks that each phase's runs came from one instance.
//
// Run it with `make examples`, or `go run ./gocron` in examples/.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/gormdlock/dlock"
	"github.com/gormdlock/dlock/examples/internal/exampledb"
)

// Elector adapts a dlock.Elector to gocron's Elector interface. gocron
// calls IsLeader before every run of a job; it answers from the dlock
// Elector's IsLeader, which never blocks and sends nothing, while the
// Elector's Run campaigns in the background (see Start).
type Elector struct{ e *dlock.Elector }

var errNotLeader = errors.New("not the leader")

// IsLeader returns nil while this instance leads.
func (g Elector) IsLeader(context.Context) error {
	if g.e.IsLeader() {
		return nil
	}
	return errNotLeader
}

// Start runs the Elector until ctx ends; the returned channel gives Run's
// error. Leading needs no work of its own here: the lead function only
// waits for its context, which ends when leadership ends.
func Start(ctx context.Context, e *dlock.Elector) (Elector, <-chan error) {
	done := make(chan error, 1)
	go func() {
		done <- e.Run(ctx, func(ctx context.Context) error {
			<-ctx.Done()
			return nil
		})
	}()
	return Elector{e}, done
}

func main() { exampledb.Main(run) }

// instance is one member of the fleet.
type instance struct {
	name      string
	scheduler gocron.Scheduler
	stop      context.CancelFunc
	ran       func() error // waits for Run's error
	elector   *dlock.Elector
}

func run(ctx context.Context, s *exampledb.Server) error {
	key := "gocron:billing:" + strconv.Itoa(os.Getpid())
	var mu sync.Mutex
	var runs []string // which instance ran each job run, in order
	var fleet []*instance
	defer func() {
		for _, in := range fleet {
			in.stop()
			_ = in.scheduler.Shutdown()
			_ = in.ran() // Run has released its session before the pools close
		}
	}()
	for i := range 3 {
		db, err := s.Open(ctx)
		if err != nil {
			return err
		}
		in := &instance{name: fmt.Sprintf("instance-%d", i)}
		if in.elector, err = dlock.NewElector(db, key, dlock.Identity(in.name)); err != nil {
			return err
		}
		ectx, stop := context.WithCancel(ctx)
		in.stop = stop
		adapter, ran := Start(ectx, in.elector)
		in.ran = sync.OnceValue(func() error { return <-ran })
		if in.scheduler, err = gocron.NewScheduler(gocron.WithDistributedElector(adapter)); err != nil {
			return err
		}
		_, err = in.scheduler.NewJob(gocron.DurationJob(100*time.Millisecond), gocron.NewTask(func() {
			mu.Lock()
			runs = append(runs, in.name)
			mu.Unlock()
		}))
		if err != nil {
			return err
		}
		in.scheduler.Start()
		fleet = append(fleet, in)
	}

	// phase waits a second and returns which instances ran the job then.
	phase := func() map[string]int {
		time.Sleep(time.Second)
		mu.Lock()
		defer mu.Unlock()
		by := map[string]int{}
		for _, r := range runs {
			by[r]++
		}
		runs = nil
		return by
	}
	first := phase()
	if len(first) != 1 {
		return fmt.Errorf("first second: runs by %v, want one instance", first)
	}
	var leader *instance
	for _, in := range fleet {
		if first[in.name] > 0 {
			leader = in
		}
	}
	s.Printf("first second: %s ran the job %d times; the others skipped it", leader.name, first[leader.name])
	s.Printf("%s shuts down", leader.name)
	leader.stop()
	if err := leader.ran(); !errors.Is(err, context.Canceled) {
		return fmt.Errorf("the Run of %s returned %w, want context.Canceled", leader.name, err)
	}
	if err := leader.scheduler.Shutdown(); err != nil {
		return err
	}
	_ = phase() // the hand-over
	second := phase()
	if len(second) != 1 || second[leader.name] > 0 {
		return fmt.Errorf("after the hand-over: runs by %v, want one other instance", second)
	}
	for name, n := range second {
		s.Printf("after the hand-over: %s ran the job %d times", name, n)
	}
	return nil
}
