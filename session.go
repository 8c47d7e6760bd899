package dlock

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"io"
	"reflect"
	"sync/atomic"
	"time"
	"unsafe"
	"weak"

	"gorm.io/gorm"
)

// session is dlock's state for one database session: a physical
// connection of the pool, whatever *sql.Conn pins it, or a *sql.Tx for
// transaction-level locks. Every Lock on the session shares it. Its
// mutex (sem) serializes dlock's statement sequences on the session, so
// that the check after an interrupted acquire can never take a hold that
// belongs to another Lock on the same key.
//
// A session holds no reference to its connection, *sql.Conn or *sql.Tx,
// so that the weak registries below can forget it once they are gone;
// the one exception, owned, lasts while a Connection or WithLock runs on
// a *sql.Conn it took from the pool, and ends before it closes it.
type session struct {
	sem    chan struct{}       // the per-session mutex; ctx-aware
	nextID atomic.Uint64       // Lock sequence numbers
	pins   atomic.Uint64       // pin generations handed out
	idSeen atomic.Int64        // id, for readers without the session mutex
	pg     pgConnRef           // pgx's PgConn behind the session, if any, weakly; set once
	dc     weak.Pointer[byte]  // the driver connection, for connClosed; set once
	dcType reflect.Type        // its pointer type
	owned  atomic.Pointer[pin] // the pin of a running Connection or WithLock that took the session from the pool

	// Guarded by sem.
	overrun overrunGuard
	id      int64  // server session id, 0 until probed
	idRead  bool   // id was read with a query, not from the driver
	setUp   bool   // the backend's setUp is done
	checked bool   // the backend's checkSession passed
	idle    string // the session's own idle timeout, while dlock raised it
	raised  bool   // dlock raised the idle timeout (KeepIdleHolders)
	dead    bool   // discarded or found gone: every hold is lost
	why     error  // why it is dead
	pinGen  uint64 // the pin dlock last sent a statement under
	holds   map[uint64]hold
	counts  map[holdKey]int
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
	pin  uint64 // the pin generation it was taken under
}

func newSession() *session {
	return &session{
		sem:    make(chan struct{}, 1),
		holds:  make(map[uint64]hold),
		counts: make(map[holdKey]int),
	}
}

// physicalSession returns the state of the driver connection behind c,
// or fresh state for c alone when c is closed or its driver connection
// is not a pointer.
func physicalSession(c *sql.Conn) *session {
	var s *session
	_ = c.Raw(func(driverConn any) error {
		v := reflect.ValueOf(driverConn)
		if v.Kind() != reflect.Pointer || v.IsNil() {
			return nil
		}
		dc := (*byte)(v.UnsafePointer()) // the object, not its type, is the key
		if known, ok := driverSessions.load(dc); ok {
			s = known
			return nil
		}
		s = driverSessions.loadOrStore(dc, func() *session {
			s := newSession()
			s.overrun.netConn = networkConn(driverConn)
			s.pg = pgRefOf(driverConn)
			s.dc, s.dcType = weak.Make(dc), v.Type()
			return s
		})
		return nil
	})
	if s == nil {
		return newSession()
	}
	return s
}

// connClosed reports whether the driver closed the session's connection
// (pgx's PgConn says so, or driver.Validator says it is not valid, as
// after the server ended the session or a cancelled statement closed it),
// as opposed to a *sql.Conn that merely went back to the pool.
func (s *session) connClosed() bool {
	if s.pg.typ != nil {
		pg := s.pg.view()
		return pg == nil || pg.IsClosed()
	}
	p := s.dc.Value()
	if p == nil || s.dcType == nil {
		return s.dcType != nil // collected: closed; unknown: no
	}
	v, ok := reflect.NewAt(s.dcType.Elem(), unsafe.Pointer(p)).Interface().(driver.Validator)
	return ok && !v.IsValid()
}

// tryLock takes the session mutex if it is free.
func (s *session) tryLock() bool {
	select {
	case s.sem <- struct{}{}:
		return true
	default:
		return false
	}
}

// lock takes the session mutex, or returns ctx.Err() if ctx ends first.
func (s *session) lock(ctx context.Context) error {
	if s.tryLock() {
		return nil
	}
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *session) unlock() { <-s.sem }

// lockWithin takes the session mutex, waiting at most d. If another
// statement sequence keeps the session that long, the session's locks can
// neither be released nor checked, so it arranges for the session (q) to
// be discarded as soon as it is free, and returns the error.
func (s *session) lockWithin(ctx context.Context, d time.Duration, q querier) error {
	if s.tryLock() {
		return nil
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d)
	defer cancel()
	err := s.lock(wctx)
	if err != nil {
		go func() {
			if s.lock(context.Background()) == nil {
				s.discardLocked(q, errSessionBusy)
				s.unlock()
			}
		}()
	}
	return err
}

// addLocked records l's hold.
func (s *session) addLocked(l *Lock) {
	k := holdKey{l.dbKey, l.mode.shared}
	s.holds[l.seq] = hold{holdKey: k, key: l.key, lock: weak.Make(l), seq: l.seq, pin: s.pinGen}
	s.counts[k]++
}

// removeLocked forgets the hold of the Lock with sequence number seq, if
// it is recorded.
func (s *session) removeLocked(seq uint64) bool {
	h, ok := s.holds[seq]
	if !ok {
		return false
	}
	delete(s.holds, seq)
	if s.counts[h.holdKey]--; s.counts[h.holdKey] <= 0 {
		delete(s.counts, h.holdKey)
	}
	return true
}

// loseLocked marks the session gone: every hold on it is lost, and each
// Lock that held one is told why.
func (s *session) loseLocked(why error) {
	s.dead, s.why = true, why
	for _, h := range s.holds {
		if l := h.lock.Value(); l != nil {
			l.markLost(why)
		}
	}
	clear(s.holds)
	clear(s.counts)
}

// discardLocked marks the session gone and makes database/sql close the
// connection instead of returning it to the pool, so that a lock dlock
// could not release cannot ride back into the pool. It closes the driver
// connection, which ends the server session, and waits at most
// discardWait: with a transaction open or a statement running on the
// connection, the close happens when that is done. dlock discards every
// session it finds gone too: when a statement failed without a reply from
// the server, the driver may not have closed the connection (database/sql
// refuses a statement whose context is done before sending it), and its
// locks would otherwise return to the pool. why tells the Locks that held
// locks on the session what happened.
func (s *session) discardLocked(q querier, why error) {
	s.loseLocked(why)
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

// discardWait is how long discardLocked waits for database/sql to let go of the
// connection before it returns and lets the close finish on its own.
const discardWait = 100 * time.Millisecond

// Registries of session state: by driver connection for pinned sessions
// (through the pin of each *sql.Conn), and by the database/sql handle of
// a transaction for transaction-level locks.
var (
	driverSessions   weakMap[byte, *session]
	connPins         weakMap[sql.Conn, *pin]
	txSessions       weakMap[sql.Tx, *session]
	preparedSessions weakMap[gorm.PreparedStmtTX, *session]
)
