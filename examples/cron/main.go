// Command cron shows a cron-style singleton: several instances of a
// service run the same schedule, and at every tick exactly one of them
// runs the job.
//
// Three instances, each with its own connection pool as if it were its own
// process, wake at every tick of a shared schedule, a few milliseconds
// apart as real clocks are. Each tries the lock "cron:nightly-report" once
// (dlock.NoWait): the first one in runs the job, the others see the lock
// busy and go back to sleep. The lock alone says "not two at a time"; to
// make it "once per tick", the job records the tick it ran in a table, and
// an instance that gets the lock checks that record first. Instance 3 is
// paused for longer than the job takes on tick 2, gets the lock after the
// winner has released it, and finds the tick done.
//
// Run it with `make examples`, or `go run ./cron` in examples/.
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
	job       = "nightly-report"
	lockKey   = "cron:" + job
	instances = 3
	ticks     = 3
	period    = 400 * time.Millisecond // the schedule: one tick every period
	jobTakes  = 150 * time.Millisecond
)

// jobRun records that an instance ran the job for a tick.
type jobRun struct {
	Job      string `gorm:"primaryKey;size:64"`
	Tick     int    `gorm:"primaryKey;autoIncrement:false"`
	Instance int
}

func (jobRun) TableName() string { return "dlock_example_job_runs" }

func main() { exampledb.Main(run) }

func run(ctx context.Context, s *exampledb.Server) (err error) {
	admin, err := s.Open(ctx)
	if err != nil {
		return err
	}
	if err := admin.Migrator().DropTable(&jobRun{}); err != nil {
		return err
	}
	if err := admin.AutoMigrate(&jobRun{}); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, admin.Migrator().DropTable(&jobRun{})) }()

	var running, maxRunning, executions atomic.Int32
	theJob := func(instance, tick int) {
		storeMax(&maxRunning, running.Add(1))
		defer running.Add(-1)
		executions.Add(1)
		s.Printf("instance %d runs tick %d", instance, tick)
		time.Sleep(jobTakes)
	}

	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, instances)
	for i := 1; i <= instances; i++ {
		db, err := s.Open(ctx) // one pool per instance, as separate processes have
		if err != nil {
			return err
		}
		wg.Go(func() {
			for tick := 1; tick <= ticks; tick++ {
				// Clocks differ by a few milliseconds; who is first changes.
				skew := time.Duration((i+tick)%instances) * 15 * time.Millisecond
				wake := start.Add(time.Duration(tick)*period + skew)
				if i == 3 && tick == 2 {
					wake = wake.Add(jobTakes + 100*time.Millisecond) // a long pause
				}
				time.Sleep(time.Until(wake))
				if err := runOnce(ctx, db, s, i, tick, theJob); err != nil {
					errs[i-1] = fmt.Errorf("instance %d, tick %d: %w", i, tick, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}

	var runs []jobRun
	if err := admin.Order("tick").Find(&runs).Error; err != nil {
		return err
	}
	for _, r := range runs {
		s.Printf("tick %d: ran once, on instance %d", r.Tick, r.Instance)
	}
	if len(runs) != ticks || executions.Load() != ticks || maxRunning.Load() != 1 {
		return fmt.Errorf("%d ticks recorded, %d executions, at most %d at once; want %d, %d, 1",
			len(runs), executions.Load(), maxRunning.Load(), ticks, ticks)
	}
	return nil
}

// runOnce is what an instance does at a tick: try the lock once; holding
// it, run the job unless the tick is already recorded.
func runOnce(ctx context.Context, db *gorm.DB, s *exampledb.Server, instance, tick int, theJob func(instance, tick int)) error {
	err := dlock.WithLock(ctx, db, lockKey, func(tx *gorm.DB) error {
		var done int64
		if err := tx.Model(&jobRun{}).Where("job = ? AND tick = ?", job, tick).Count(&done).Error; err != nil {
			return err
		}
		if done > 0 {
			s.Printf("instance %d got the lock late: tick %d is done already, skipping", instance, tick)
			return nil
		}
		theJob(instance, tick)
		// Record the tick before WithLock releases the lock.
		return tx.Create(&jobRun{Job: job, Tick: tick, Instance: instance}).Error
	}, dlock.NoWait())
	if errors.Is(err, dlock.ErrNotAcquired) && ctx.Err() == nil {
		s.Printf("instance %d skips tick %d: %v", instance, tick, err)
		return nil
	}
	return err
}

// storeMax raises m to n if n is larger.
func storeMax(m *atomic.Int32, n int32) {
	for {
		old := m.Load()
		if n <= old || m.CompareAndSwap(old, n) {
			return
		}
	}
}
