package dlock

import (
	"context"
	"database/sql"
	"errors"
	"net"
	"sync"
	"time"
	"weak"
)

// errOutlived is joined to a short statement's error when the
// statement outlived its bound and dlock ended the session.
var errOutlived = errors.New("dlock: a statement outlived its bound; the session was ended from a control connection")

// overrunGuard ends a session whose short statement outlives its bound. One
// timer per session serves every short statement on it; the session mutex
// keeps them one at a time.
//
// The timer is lazy: arm and stop only note the statement's deadline and
// whether it still runs, and touch the timer only when none is pending
// (or the new deadline comes before it). When the timer fires it ends
// the session if the statement then running is past its deadline,
// re-arms itself for a later deadline, and goes idle when nothing runs.
// Stopping and resetting a runtime timer around every statement was the
// largest cost of dlock's own in an uncontended cycle (BenchmarkPaired,
// dlock/raw geomean over its cases: 1.058 with it, 1.017 without).
type overrunGuard struct {
	mu sync.Mutex
	t  *time.Timer
	// t is scheduled, to fire at fireAt.
	pending bool
	fireAt  time.Time
	// A statement is in flight, bounded by deadline.
	running  bool
	deadline time.Time
	// The guard is ending the session of the running statement; ended
	// counts the end while it is sent, which stop waits for when waitEnd.
	ending  bool
	ended   sync.WaitGroup
	waitEnd bool
	// Where to send the end: the session id, from a control connection,
	// and the session's network connection, which a deadline wakes (set
	// once, when the session's state is made).
	be      backend
	pool    *sql.DB
	id      int64
	netConn net.Conn
}

// arm makes the overrun guard end session id if the statement about to run
// takes longer than d, unless stop is called first. With waitEnd, a stop
// after the guard began to end the session returns once the end was sent
// (or timed out): a Release that returns has freed its lock. Without it,
// stop returns as soon as the statement does, which the driver's network
// connection deadline makes immediate where dlock knows it: a try, whose
// bound is the caller's Timeout, need not wait for a control connection
// that the same cut may hold up.
func (g *overrunGuard) arm(b *binding, id int64, d time.Duration, waitEnd bool) {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.be, g.pool, g.id = b.backend, b.reg.pool, id
	g.running, g.deadline, g.waitEnd = true, now.Add(d), waitEnd
	switch {
	case g.t == nil:
		// The timer holds the guard weakly: a timer still pending after
		// the session's last statement keeps neither the session's state
		// nor its pool in memory (a closed pool goes at the next GC).
		wg := weak.Make(g)
		g.t = time.AfterFunc(d, func() {
			if g := wg.Value(); g != nil {
				g.fire()
			}
		})
	case !g.pending || g.deadline.Before(g.fireAt):
		g.t.Reset(d)
	default:
		return // the pending timer fires first and re-arms itself
	}
	g.pending, g.fireAt = true, g.deadline
}

// stop ends the watch of the running statement. It reports false if the
// overrun guard ended the session, after that is done when arm's waitEnd
// asked for it.
func (g *overrunGuard) stop() bool {
	g.mu.Lock()
	g.running = false
	ending, wait := g.ending, g.waitEnd
	g.ending = false
	g.mu.Unlock()
	if ending {
		if wait {
			g.ended.Wait()
		}
		return false
	}
	return true
}

func (g *overrunGuard) fire() {
	g.mu.Lock()
	if !g.running {
		g.pending = false
		g.mu.Unlock()
		return
	}
	if rem := time.Until(g.deadline); rem > 0 {
		g.t.Reset(rem)
		g.fireAt = g.deadline
		g.mu.Unlock()
		return
	}
	g.pending = false
	g.ending = true
	g.ended.Add(1)
	be, pool, id, nc := g.be, g.pool, g.id, g.netConn
	g.mu.Unlock()

	defer g.ended.Done()
	if nc != nil {
		// The statement returns now, even if the network lost its answer.
		_ = nc.SetDeadline(time.Unix(1, 0))
	}
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	_ = be.terminate(ctx, pool, id)
}
