package bench

// The lock implementations under comparison, behind one small interface.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	pglock "github.com/allisson/go-pglock/v3"
	"github.com/gormdlock/dlock"
	gomysqllock "github.com/sanketplus/go-mysql-lock"
	"gorm.io/gorm"
)

// Implementations, as they appear in benchmark names (impl=...).
const (
	implDlock  = "dlock"
	implRaw    = "raw"    // hand-written SQL, sent with a context that cannot be cancelled
	implRawCtx = "rawctx" // the same, sent with the caller's context, as most hand-written code does
	implPeer   = "peer"   // go-mysql-lock on MySQL, go-pglock on PostgreSQL
	// implWithLock is dlock.WithLock on the pool: it pins a session per
	// call, as a caller without a session of its own does.
	implWithLock = "withlock"
)

// Wait modes, as they appear in benchmark names (mode=...).
const (
	modeBlock   = "block"   // wait until acquired or ctx ends
	modeTimeout = "timeout" // wait at most waitTimeout
	modeTry     = "try"     // one try
)

// waitTimeout is the Timeout of the timed mode: long enough never to run
// out in a benchmark.
const waitTimeout = 5 * time.Second

// forever is the GET_LOCK timeout that hand-written SQL and go-mysql-lock
// send for a blocking wait: a negative timeout fails on MariaDB.
const forever = 365 * 24 * 3600

// key names one lock on both servers.
type key struct {
	name string // the lock name (MySQL) and dlock's key
	pg   int64  // the PostgreSQL key of name, as dlock computes it
}

// locker takes and gives back one lock.
type locker interface {
	acquire(ctx context.Context) (bool, error)
	release(ctx context.Context) error
}

// on is where a locker runs: a pinned session for dlock and the raw SQL,
// the pool for the peers, which take a session of their own per lock.
type on struct {
	p    *pool
	tx   *gorm.DB
	conn *sql.Conn
}

// newLocker returns impl's locker for k in mode m.
func newLocker(impl string, o on, k key, m string) (locker, error) {
	switch impl {
	case implDlock:
		l, err := dlock.New(o.tx, k.name)
		if err != nil {
			return nil, err
		}
		d := &dlockLocker{l: l}
		switch m {
		case modeTimeout:
			d.opts = []dlock.Option{dlock.Timeout(waitTimeout)}
		case modeTry:
			d.opts = []dlock.Option{dlock.NoWait()}
		}
		return d, nil
	case implRaw, implRawCtx:
		withCtx := impl == implRawCtx
		if o.p.srv.dialect == "mysql" {
			return newRawMySQL(o.conn, k.name, m, withCtx), nil
		}
		return newRawPG(o.conn, k.pg, m, withCtx), nil
	case implWithLock:
		w := &withLock{db: o.p.gdb, name: k.name}
		switch m {
		case modeTimeout:
			w.opts = []dlock.Option{dlock.Timeout(waitTimeout)}
		case modeTry:
			w.opts = []dlock.Option{dlock.NoWait()}
		}
		return w, nil
	case implPeer:
		if o.p.srv.dialect == "mysql" {
			return newMySQLPeer(o.p.db, k.name, m), nil
		}
		return &pgPeer{db: o.p.db, id: k.pg, mode: m}, nil
	}
	return nil, fmt.Errorf("bench: unknown implementation %q", impl)
}

// dlockLocker is a dlock Lock with the options of one mode.
type dlockLocker struct {
	l    *dlock.Lock
	opts []dlock.Option
}

func (d *dlockLocker) acquire(ctx context.Context) (bool, error) { return d.l.Acquire(ctx, d.opts...) }
func (d *dlockLocker) release(ctx context.Context) error         { return d.l.Release(ctx) }

// withLock runs dlock.WithLock with an empty fn as acquire; the release
// is part of it.
type withLock struct {
	db   *gorm.DB
	name string
	opts []dlock.Option
}

func (w *withLock) acquire(ctx context.Context) (bool, error) {
	err := dlock.WithLock(ctx, w.db, w.name, func(*gorm.DB) error { return nil }, w.opts...)
	return err == nil, err
}

func (w *withLock) release(context.Context) error { return nil }

// rawMySQL is the SQL a careful hand would write on the pinned session:
// one statement to lock, one to unlock, the name bound as an argument
// (interpolated by the driver, so one round trip each).
type rawMySQL struct {
	conn    *sql.Conn
	name    string
	lock    string
	withCtx bool
}

func newRawMySQL(conn *sql.Conn, name, m string, withCtx bool) *rawMySQL {
	r := &rawMySQL{conn: conn, name: name, withCtx: withCtx}
	switch m {
	case modeBlock:
		r.lock = fmt.Sprintf("SELECT GET_LOCK(?, %d)", forever)
	case modeTimeout:
		r.lock = fmt.Sprintf("SELECT GET_LOCK(?, %d)", int(waitTimeout/time.Second))
	default:
		r.lock = "SELECT GET_LOCK(?, 0)"
	}
	return r
}

// stmtCtx is the context the raw SQL sends its statements with. By
// default one without cancellation, the cheapest call there is (and the
// safe one: a cancelled context makes the driver close the session, with
// every lock on it); with withCtx the caller's.
func stmtCtx(ctx context.Context, withCtx bool) context.Context {
	if withCtx {
		return ctx
	}
	return context.Background()
}

func (r *rawMySQL) acquire(ctx context.Context) (bool, error) {
	var got sql.NullInt64
	err := r.conn.QueryRowContext(stmtCtx(ctx, r.withCtx), r.lock, r.name).Scan(&got)
	return got.Valid && got.Int64 == 1, err
}

func (r *rawMySQL) release(ctx context.Context) error {
	var got sql.NullInt64
	if err := r.conn.QueryRowContext(stmtCtx(ctx, r.withCtx), "SELECT RELEASE_LOCK(?)", r.name).Scan(&got); err != nil {
		return err
	}
	if !got.Valid || got.Int64 != 1 {
		return errors.New("raw: RELEASE_LOCK: not held")
	}
	return nil
}

// rawPG is the hand-written PostgreSQL equivalent, the key bound as $1.
// The timed wait sets lock_timeout for the one statement.
type rawPG struct {
	conn    *sql.Conn
	key     int64
	mode    string
	withCtx bool
}

func newRawPG(conn *sql.Conn, key int64, m string, withCtx bool) *rawPG {
	return &rawPG{conn: conn, key: key, mode: m, withCtx: withCtx}
}

const timeoutMillis = "5000" // waitTimeout for lock_timeout

func (r *rawPG) acquire(ctx context.Context) (bool, error) {
	ctx = stmtCtx(ctx, r.withCtx)
	switch r.mode {
	case modeBlock:
		_, err := r.conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", r.key)
		return err == nil, err
	case modeTimeout:
		_, err := r.conn.ExecContext(ctx, "SELECT pg_advisory_lock($1) FROM set_config('lock_timeout', $2, true)", r.key, timeoutMillis)
		return err == nil, err
	}
	var ok bool
	err := r.conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock($1)", r.key).Scan(&ok)
	return ok, err
}

func (r *rawPG) release(ctx context.Context) error {
	var ok bool
	if err := r.conn.QueryRowContext(stmtCtx(ctx, r.withCtx), "SELECT pg_advisory_unlock($1)", r.key).Scan(&ok); err != nil {
		return err
	}
	if !ok {
		return errors.New("raw: pg_advisory_unlock: not held")
	}
	return nil
}

// mysqlPeer is github.com/sanketplus/go-mysql-lock. It takes a session from
// the pool for every lock and gives it back on Release. Its Obtain sends a
// negative timeout, which fails on MariaDB, so every mode goes through
// ObtainTimeoutContext.
type mysqlPeer struct {
	locker  *gomysqllock.MysqlLocker
	name    string
	timeout int
	held    *gomysqllock.Lock
}

func newMySQLPeer(db *sql.DB, name, m string) *mysqlPeer {
	p := &mysqlPeer{locker: gomysqllock.NewMysqlLocker(db), name: name}
	switch m {
	case modeBlock:
		p.timeout = forever
	case modeTimeout:
		p.timeout = int(waitTimeout / time.Second)
	}
	return p
}

func (p *mysqlPeer) acquire(ctx context.Context) (bool, error) {
	l, err := p.locker.ObtainTimeoutContext(ctx, p.name, p.timeout)
	if errors.Is(err, gomysqllock.ErrMySQLTimeout) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	p.held = l
	return true, nil
}

func (p *mysqlPeer) release(context.Context) error {
	l := p.held
	p.held = nil
	return l.Release()
}

// pgPeer is github.com/allisson/go-pglock: NewLock takes a session from the
// pool, Close gives it back. It has no timeout of its own: the timed mode
// is a context deadline, which makes pgx cancel the statement.
type pgPeer struct {
	db   *sql.DB
	id   int64
	mode string
	held pglock.Lock
}

func (p *pgPeer) acquire(ctx context.Context) (bool, error) {
	l, err := pglock.NewLock(ctx, p.id, p.db)
	if err != nil {
		return false, err
	}
	var ok bool
	switch p.mode {
	case modeBlock:
		err = l.WaitAndLock(ctx)
		ok = err == nil
	case modeTimeout:
		tctx, cancel := context.WithTimeout(ctx, waitTimeout)
		err = l.WaitAndLock(tctx)
		cancel()
		ok = err == nil
	default:
		ok, err = l.Lock(ctx)
	}
	if !ok {
		_ = l.Close()
		return false, err
	}
	p.held = l
	return true, nil
}

func (p *pgPeer) release(ctx context.Context) error {
	err := p.held.Unlock(ctx)
	return errors.Join(err, p.held.Close())
}
