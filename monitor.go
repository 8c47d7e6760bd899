package dlock

import (
	"context"
	"database/sql"
	"sync"
	"time"
	"weak"
)

// defaultCheckInterval is Plugin.CheckInterval's default.
const defaultCheckInterval = 500 * time.Millisecond

// monitor checks, from a control connection of one pool, that the locks
// held through the pool are still held: one statement per interval for
// all of them, and only while some are held. A hold the server no longer
// shows is lost: its Lock is told (Lost, the WithLock context, its next
// call). A check that fails is not a loss; when checks have failed for
// longer than patience, every watched hold is reported lost, since none
// can be confirmed. The checks never touch the pinned sessions, which
// belong to the code that holds the locks.
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
	if m == nil || m.interval < 0 || l.sess.id == 0 {
		return
	}
	h := watchedHold{sessionID: l.sess.id, dbKey: l.dbKey, stmtKey: l.stmtKey, shared: l.mode.shared, gen: gen}
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
// while holds remain.
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
		return
	}
	m.timer.Reset(m.interval)
}

// confirm asks the server which holds it still shows, and tells the Locks
// of the others.
func (m *monitor) confirm(pool *sql.DB, locks []*Lock, holds []watchedHold) {
	if st := pool.Stats(); st.MaxOpenConnections > 0 && st.InUse >= st.MaxOpenConnections {
		return // no control connection to be had: nothing learned
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(m.interval, controlTimeout))
	held, err := m.be.holding(ctx, pool, holds)
	cancel()
	now := time.Now()
	m.mu.Lock()
	if err != nil {
		if m.failingSince.IsZero() {
			m.failingSince = now
		}
		failing := now.Sub(m.failingSince)
		m.mu.Unlock()
		if failing > m.patience {
			for i, l := range locks {
				l.lostByCheck(holds[i].gen, errUnconfirmed)
			}
		}
		return
	}
	m.failingSince = time.Time{}
	m.mu.Unlock()
	for i, l := range locks {
		if !held[i] {
			l.lostByCheck(holds[i].gen, errNotHeldByServer)
		}
	}
}
