package dlock

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"testing"
	"time"
)

// controlRecorder is a backend whose only methods in use are the two that
// run on a control connection, cancel and terminate. It records what they
// target, can fail cancels, and can hold both until told to go on. The
// logic of the canceller and the overrun guard is pure; the integration tests
// cancel and end real sessions.
type controlRecorder struct {
	backend
	failCancel bool
	hold       chan struct{} // if not nil, cancel and terminate wait for it

	mu      sync.Mutex
	cancels int
	ended   []int64     // sessions terminated, in order
	endedAt []time.Time // when
}

func (r *controlRecorder) cancel(context.Context, *sql.DB, int64) error {
	r.mu.Lock()
	r.cancels++
	r.mu.Unlock()
	if r.hold != nil {
		<-r.hold
	}
	if r.failCancel {
		return errors.New("no control connection")
	}
	return nil
}

func (r *controlRecorder) terminate(_ context.Context, _ *sql.DB, id int64) error {
	r.mu.Lock()
	r.ended = append(r.ended, id)
	r.endedAt = append(r.endedAt, time.Now())
	r.mu.Unlock()
	if r.hold != nil {
		<-r.hold
	}
	return nil
}

func (r *controlRecorder) cancelsSent() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cancels
}

// endedSessions returns the sessions terminated so far, and when.
func (r *controlRecorder) endedSessions() ([]int64, []time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int64(nil), r.ended...), append([]time.Time(nil), r.endedAt...)
}

func (r *controlRecorder) anyEnded() bool {
	ids, _ := r.endedSessions()
	return len(ids) > 0
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s never happened", what)
		}
		time.Sleep(time.Millisecond)
	}
}
