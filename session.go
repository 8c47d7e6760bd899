package dlock

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"io"
	"sync/atomic"
	"time"
	"weak"

	"gorm.io/gorm"
)

// session is dlock's state for one database session: a pinned *sql.Conn,
// or a *sql.Tx for transaction-level locks. Every Lock on the session
// shares it. Its mutex (sem) serializes dlock's statement sequences on the
// session, so that the check after an interrupted acquire can never take
// a hold that belongs to another Lock on the same key.
//
// A session holds no reference to its *sql.Conn or *sql.Tx, so that the
// weak registries below can forget it once the session is gone.
type session struct {
	sem    chan struct{} // the per-session mutex; ctx-aware
	nextID atomic.Uint64

	// Guarded by sem.
	dog    watchdog
	id     int64 // server session id, 0 until probed
	dead   bool  // discarded or found gone: every hold is lost
	holds  map[uint64]hold
	counts map[holdKey]int
}

// holdKey names one lock in one mode on a session; holds of the same key
// stack on both servers.
type holdKey struct {
	dbKey  any
	shared bool
}

// hold is one Lock's hold, as the session book keeps it.
type hold struct {
	holdKey
	key  any
	lock weak.Pointer[Lock]
	seq  uint64 // the Lock's creation sequence on this session
}

func newSession() *session {
	return &session{
		sem:    make(chan struct{}, 1),
		holds:  make(map[uint64]hold),
		counts: make(map[holdKey]int),
	}
}

// tryAcquire takes the session mutex if it is free.
func (s *session) tryAcquire() bool {
	select {
	case s.sem <- struct{}{}:
		return true
	default:
		return false
	}
}

// acquire takes the session mutex, or returns ctx.Err() if ctx ends first.
func (s *session) acquire(ctx context.Context) error {
	if s.tryAcquire() {
		return nil
	}
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *session) release() { <-s.sem }

// acquireWithin takes the session mutex, waiting at most d. If another
// statement sequence keeps the session that long, the session's locks can
// neither be released nor checked, so it arranges for the session (q) to
// be discarded as soon as it is free, and returns the error.
func (s *session) acquireWithin(ctx context.Context, d time.Duration, q querier) error {
	if s.tryAcquire() {
		return nil
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d)
	defer cancel()
	err := s.acquire(wctx)
	if err != nil {
		go func() {
			if s.acquire(context.Background()) == nil {
				s.discard(q)
				s.release()
			}
		}()
	}
	return err
}

// add records l's hold. The caller holds the session mutex.
func (s *session) add(l *Lock) {
	k := holdKey{l.dbKey, l.mode.shared}
	s.holds[l.seq] = hold{holdKey: k, key: l.key, lock: weak.Make(l), seq: l.seq}
	s.counts[k]++
}

// remove forgets l's hold, if it is recorded. The caller holds the mutex.
func (s *session) remove(l *Lock) bool {
	h, ok := s.holds[l.seq]
	if !ok {
		return false
	}
	delete(s.holds, l.seq)
	if s.counts[h.holdKey]--; s.counts[h.holdKey] <= 0 {
		delete(s.counts, h.holdKey)
	}
	return true
}

// lose marks the session gone: every hold on it is lost. The caller holds
// the mutex.
func (s *session) lose() {
	s.dead = true
	clear(s.holds)
	clear(s.counts)
}

// discard marks the session gone and makes database/sql close the
// connection instead of returning it to the pool, so that a lock dlock
// could not release cannot ride back into the pool. It closes the driver
// connection, which ends the server session, and waits at most
// discardWait: with a transaction open or a statement running on the
// connection, the close happens when that is done. dlock discards every session it finds
// gone too: when a statement failed without a reply from the server, the
// driver may not have closed the connection (database/sql refuses a
// statement whose context is done before sending it), and its locks would
// otherwise return to the pool. The caller holds the mutex.
func (s *session) discard(q querier) {
	s.lose()
	c, ok := q.(*sql.Conn)
	if !ok {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Raw(func(dc any) error {
			// Closing the driver connection ends the server session, and
			// its locks, even if the *sql.Conn is closed concurrently;
			// ErrBadConn keeps database/sql from reusing it.
			if cl, ok := dc.(io.Closer); ok {
				_ = cl.Close()
			}
			return driver.ErrBadConn
		})
	}()
	t := time.NewTimer(discardWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C: // a transaction or a statement still holds the connection
	}
}

// discardWait is how long discard waits for database/sql to let go of the
// connection before it returns and lets the close finish on its own.
const discardWait = 100 * time.Millisecond

// Registries of session state, by the database/sql handle of the session.
var (
	connSessions     weakMap[sql.Conn, *session]
	txSessions       weakMap[sql.Tx, *session]
	preparedSessions weakMap[gorm.PreparedStmtTX, *session]
)
