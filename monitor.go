package dlock

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"time"
	"weak"
)

// monitor checks, from a control connection of one pool, that the locks
// held through the pool are still held: one statement per interval for
// all of them, and only while some are held. A hold the server no longer
// shows is lost: its Lock is told (Done, the WithLock context, its next
// call), with the cause the server's answer names: the session ended, or
// the session is alive without the lock. A check that fails is not a
// loss; when checks have failed for longer than patience, every watched
// hold is reported lost, since none can be confirmed. The checks never
// touch the pinned sessions, which belong to the code that holds the
// locks.
//
// While locks are held the monitor keeps one session of the pool as its
// own control connection (it counts toward SetMaxOpenConns), so that a
// pool at its limit, or one that keeps no idle sessions, cannot starve
// the checks; it gives the session back when nothing is held.
type monitor struct {
	pool     weak.Pointer[sql.DB] // the monitor must not keep its pool alive
	be       backend
	interval time.Duration
	patience time.Duration

	mu           sync.Mutex
	watched      map[*Lock]watchedHold
	timer        *time.Timer
	armed        bool
	failingSince time.Time

	conn *controlConn // the control connection, while locks are held; used by check only
}

// watchedHold is what a check needs of one hold, captured at its grant
// under the session mutex.
type watchedHold struct {
	sessionID int64
	dbKey     any
	stmtKey   any
	shared    bool
	gen       uint64 // the Lock's hold generation
}

// holdStatus is what the server shows of one watched hold.
type holdStatus uint8

const (
	holdHeld       holdStatus = iota // the session holds it
	holdDropped                      // the session is alive and does not hold it
	holdSessionEnd                   // the session is gone
)

func newMonitor(pool *sql.DB, be backend, cfg Plugin) *monitor {
	return &monitor{
		pool:     weak.Make(pool),
		be:       be,
		interval: cfg.CheckInterval,
		patience: cfg.ReleaseTimeout,
		watched:  make(map[*Lock]watchedHold),
	}
}

// watch starts checking l's hold. The caller holds l's session mutex.
func (m *monitor) watch(l *Lock, gen uint64) {
	if m == nil || m.interval < 0 || l.bind.sess.id == 0 {
		return
	}
	h := watchedHold{sessionID: l.bind.sess.id, dbKey: l.dbKey, stmtKey: l.stmtKey, shared: l.mode.shared, gen: gen}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.watched[l] = h
	if !m.armed {
		m.armed = true
		if m.timer == nil {
			m.timer = time.AfterFunc(m.interval, m.check)
		} else {
			m.timer.Reset(m.interval)
		}
	}
}

// unwatch stops checking l's hold; the timer idles once nothing is held.
func (m *monitor) unwatch(l *Lock) {
	if m == nil {
		return
	}
	m.mu.Lock()
	delete(m.watched, l)
	m.mu.Unlock()
}

// check runs one round, on the timer's goroutine, and re-arms the timer
// while holds remain. Only one round runs at a time.
func (m *monitor) check() {
	m.mu.Lock()
	locks := make([]*Lock, 0, len(m.watched))
	holds := make([]watchedHold, 0, len(m.watched))
	for l, h := range m.watched {
		locks = append(locks, l)
		holds = append(holds, h)
	}
	m.mu.Unlock()
	pool := m.pool.Value()
	if len(holds) > 0 && pool != nil {
		m.confirm(pool, locks, holds)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.watched) == 0 || pool == nil {
		m.armed = false
		m.failingSince = time.Time{}
		m.closeConn()
		return
	}
	m.timer.Reset(m.interval)
}

// closeConn gives the control connection back to the pool.
func (m *monitor) closeConn() {
	if m.conn != nil {
		_ = m.conn.Close()
		m.conn = nil
	}
}

// confirm asks the server which holds it still shows, and tells the Locks
// of the others: every lost hold is signalled (Done, fn's context) before
// any Observer or Logger hears of one, so a slow Observer delays no signal.
func (m *monitor) confirm(pool *sql.DB, locks []*Lock, holds []watchedHold) {
	ctx, cancel := context.WithTimeout(context.Background(), max(m.interval, controlTimeout))
	defer cancel()
	status, err := m.ask(ctx, pool, holds)
	if errors.Is(err, errNoControlConn) {
		return // nothing learned, nothing failed
	}
	now := time.Now()
	var lost []loss
	m.mu.Lock()
	switch {
	case err != nil:
		if m.failingSince.IsZero() {
			m.failingSince = now
		}
		failing := now.Sub(m.failingSince)
		m.mu.Unlock()
		if failing > m.patience {
			for i, l := range locks {
				lost = append(lost, l.lostByCheck(holds[i].gen, errUnconfirmed))
			}
		}
	default:
		m.failingSince = time.Time{}
		m.mu.Unlock()
		for i, l := range locks {
			switch status[i] {
			case holdDropped:
				lost = append(lost, l.lostByCheck(holds[i].gen, l.notHeldWhy()))
			case holdSessionEnd:
				lost = append(lost, l.lostByCheck(holds[i].gen, errSessionEnded))
			}
		}
	}
	if len(lost) == 0 {
		return
	}
	m.mu.Lock()
	if len(m.watched) == 0 {
		m.closeConn() // before the Observer, which may be slow
	}
	m.mu.Unlock()
	for _, x := range lost {
		x.report()
	}
}

// ask runs the check on the monitor's control connection, taking one from
// the pool first if it has none. A pool at its SetMaxOpenConns limit
// yields none (errNoControlConn): that round learns nothing.
func (m *monitor) ask(ctx context.Context, pool *sql.DB, holds []watchedHold) ([]holdStatus, error) {
	if m.conn == nil {
		if st := pool.Stats(); st.MaxOpenConnections > 0 && st.InUse >= st.MaxOpenConnections {
			return nil, errNoControlConn
		}
		c, err := pool.Conn(ctx)
		if err != nil {
			return nil, err
		}
		m.conn = &controlConn{Conn: c}
	}
	status, err := m.be.holding(ctx, m.conn, holds)
	if err != nil {
		m.closeConn() // a new one next round
	}
	return status, err
}

// errNoControlConn is a check that found no session free for it.
var errNoControlConn = errors.New("dlock: no control connection free in the pool")
