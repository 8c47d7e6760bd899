package dlock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"
)

// Timings of an Elector.
const (
	// campaignRetryMin and campaignRetryMax bound the pause after a
	// campaign that failed (server down, session lost while waiting): it
	// doubles from the first to the second after each failure in a row,
	// and each pause is drawn at random from its upper half.
	campaignRetryMin = 250 * time.Millisecond
	campaignRetryMax = 5 * time.Second
	// resignPause is the pause before campaigning again after lead
	// returned nil, so that a lead that returns at once does not make an
	// Elector with no rival acquire and release in a loop.
	resignPause = campaignRetryMin
	// leadFence is how long a new leader waits after the grant before it
	// calls lead: room for the previous leader to see its ctx end when
	// its session ended (the beacon tells it within milliseconds).
	leadFence = 250 * time.Millisecond
	// beaconPause is the pause before a beacon that was cut short
	// (statement_timeout, a KILL QUERY from an operator) runs again.
	beaconPause = 250 * time.Millisecond
	// beaconStopBound bounds the sending of a beacon's cancel; a beacon
	// that has not ended a beaconPeriod later has its session ended.
	beaconStopBound = 500 * time.Millisecond
	// beaconCancelEvery is how often the cancel of a beacon is sent again
	// while it runs on.
	beaconCancelEvery = 100 * time.Millisecond
	// maxIdentity is the longest Identity, in bytes.
	maxIdentity = 128
)

// Elector elects one leader among the Electors on one lock key, in every
// process that shares the database: [Elector.Run] calls its lead function
// only while it holds the key's lock, an exclusive session-level lock like
// a [Lock]'s.
//
// Each Run campaigns on a database session of its own, pinned from the
// pool of the *gorm.DB given to [NewElector]: a follower waits in the
// server's lock statement, and the server hands the lock to one waiter at
// once when the leader releases it or its session ends; a follower sends
// nothing while it waits. So N candidates hold N sessions, one each, whether they lead or wait;
// count them in SetMaxOpenConns, with room for the control connections
// that dlock takes from the same pool (the loss checks while one leads,
// and one for a moment when a wait is cancelled or a leader steps down).
//
// While it holds the lock, an Elector runs a statement on its session
// over and over, the beacon: a sleep of half a second (SLEEP on MySQL and
// MariaDB, pg_sleep on PostgreSQL) whose text names the leader (see
// [Identity]) and the time of the grant. Because the client waits for the
// beacon's answer, the old leader learns within milliseconds that the
// server ended its session (KILL, pg_terminate_backend, a restart), not at
// the next check; and because each beacon ends within half a second, the
// server notices within about that much that a leader's process died and
// frees the lock (a server does not look at a session's socket while it
// runs a statement). [Elector.Leader] and [Holders] read the beacon from
// any process.
//
// A leader cut off from the server by the network learns it from the loss
// checks, within the Plugin's ReleaseTimeout; the server frees its lock
// only later (PostgreSQL after ServerKeepalive, about 10 s by default;
// MySQL and MariaDB when the TCP connection fails), so no other candidate
// leads before then. A process that is paused (GC, SIGSTOP) keeps its
// session, and leads on when it resumes. A lead that ignores its context
// runs on after the loss: nothing can stop it.
//
// Elected, lost and resigned go to the Plugin's Logger (Info, Warn, Info)
// and, when the Plugin's Observer also implements [ElectionObserver], to
// it. An Elector is safe for use from several goroutines, but runs one Run
// at a time.
type Elector struct {
	db       *gorm.DB
	reg      registration
	key      any
	dbKey    any
	identity string

	running atomic.Bool
	leading atomic.Bool
}

// Identity sets the name an Elector shows while it leads, for
// [Elector.Leader], [Holders] (in Holder.Query) and `dlock who`: 1 to 128
// printable ASCII characters, without "/*" or "*/". It goes to
// [NewElector] only. Default: the host name and the process id,
// "host:pid".
func Identity(id string) Option {
	return func(o *options) { o.identity = id; o.identityOpts++ }
}

// NewElector returns an Elector on key, on the pool of db. It sends
// nothing to the database. opts may hold one [Identity]; the mode and wait
// options do not apply to an Elector.
//
// Errors: [ErrNotRegistered], [ErrInvalidKey], [ErrInvalidOption].
func NewElector(db *gorm.DB, key any, opts ...Option) (*Elector, error) {
	var o options
	for i, opt := range opts {
		if opt == nil {
			return nil, fmt.Errorf("%w: NewElector: option %d is nil", ErrInvalidOption, i)
		}
		opt(&o)
	}
	switch {
	case o.modeOpts > 0:
		return nil, fmt.Errorf("%w: NewElector takes no mode option (its lock is exclusive and session-level)", ErrInvalidOption)
	case o.waitOpts > 0:
		return nil, fmt.Errorf("%w: NewElector takes no wait option (it waits until it leads or Run's ctx ends)", ErrInvalidOption)
	case o.identityOpts > 1:
		return nil, fmt.Errorf("%w: NewElector: more than one Identity", ErrInvalidOption)
	}
	id := o.identity
	if o.identityOpts == 0 {
		id = defaultIdentity()
	} else if err := checkIdentity(id); err != nil {
		return nil, err
	}
	reg, err := registered(db)
	if err != nil {
		return nil, err
	}
	dbKey, err := reg.server.backend.dbKey(key, reg.cfg.KeyPrefix)
	if err != nil {
		return nil, err
	}
	if err := reg.server.backend.checkMode(options{}); err != nil {
		return nil, err
	}
	return &Elector{db: db, reg: reg, key: key, dbKey: dbKey, identity: id}, nil
}

// checkIdentity refuses an identity that cannot go into the beacon's text.
func checkIdentity(id string) error {
	if id == "" || len(id) > maxIdentity {
		return fmt.Errorf("%w: Identity must have 1 to %d characters, has %d", ErrInvalidOption, maxIdentity, len(id))
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("%w: Identity %q: only printable ASCII characters", ErrInvalidOption, id)
		}
	}
	if strings.Contains(id, "/*") || strings.Contains(id, "*/") {
		return fmt.Errorf("%w: Identity %q: no /* or */", ErrInvalidOption, id)
	}
	return nil
}

// defaultIdentity returns "host:pid", with the characters an Identity may
// not have replaced by '?' and the host name cut to fit.
func defaultIdentity() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	pid := ":" + strconv.Itoa(os.Getpid())
	b := []byte(host)
	for i, c := range b {
		if c < 0x20 || c > 0x7e || c == '*' {
			b[i] = '?'
		}
	}
	if len(b) > maxIdentity-len(pid) {
		b = b[:maxIdentity-len(pid)]
	}
	return string(b) + pid
}

// IsLeader reports whether this Elector leads now: whether its lead
// function runs and its hold has not been found lost. It never blocks and
// sends nothing.
func (e *Elector) IsLeader() bool { return e.leading.Load() }

// Run campaigns for leadership until ctx ends, and calls lead each time
// it wins, with a context that ends when leadership ends: when the hold is
// found lost (its [context.Cause] then matches [ErrLockLost]) or when ctx
// ends. lead should return soon after its context ends; another leader may
// be elected from then on.
//
// Run blocks: while it follows, in the server's lock statement; while it
// leads, in lead. A new leader calls lead a quarter of a second after the
// grant, so that an old leader whose session was ended sees its context
// end first; as long as each lead returns when its context ends, two leads
// never run at once. What happens when lead returns:
//
//   - nil: Run releases the lock, so that a waiting candidate takes over at
//     once, and campaigns again after a pause of a quarter of a second (so
//     that a lead that returns at once does not spin; with no rival, this
//     Elector wins again).
//   - after its hold was lost: Run campaigns again at once, whatever lead
//     returned (a non-nil error is logged with the loss).
//   - any other non-nil error: Run releases the lock and returns that
//     error.
//   - a panic, or runtime.Goexit: Run releases the lock, and the panic goes
//     on.
//
// A campaign that fails (the server is down, the session was lost while
// waiting, no session from the pool) is logged at Warn and tried again
// after a pause that doubles from 250 ms up to 5 s, with jitter.
//
// Once ctx ends, Run returns ctx.Err() within a second (plus the time lead
// takes to return), with the lock released: a waiting campaign is
// cancelled from a control connection, as [Lock.Acquire] does. (If lead
// then returns an error that is not ctx's, Run returns that error.) A nil
// lead, or a second Run while one runs, is an error at once
// ([ErrInvalidOption], [ErrAlreadyAcquired]).
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context) error) error {
	if lead == nil {
		return fmt.Errorf("%w: Elector.Run: nil lead", ErrInvalidOption)
	}
	if !e.running.CompareAndSwap(false, true) {
		return fmt.Errorf("%w: Elector.Run is already running", ErrAlreadyAcquired)
	}
	defer e.running.Store(false)
	var retry backoff
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		began := time.Now()
		t, err := e.campaign(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if time.Since(began) > campaignRetryMax {
				retry = backoff{} // it waited a while: no failure in a row
			}
			d := retry.delay()
			e.log(ctx, slog.LevelWarn, "dlock: election campaign failed", slog.String("key", keyText(e.key)),
				slog.String("error", err.Error()), slog.Duration("retry_in", d))
			if !sleepCtx(ctx, d) {
				return ctx.Err()
			}
			continue
		}
		retry = backoff{}
		pause, err := e.serve(ctx, t, lead)
		switch {
		case err != nil:
			return err
		case ctx.Err() != nil:
			return ctx.Err()
		case pause && !sleepCtx(ctx, resignPause):
			return ctx.Err()
		}
	}
}

// term is one hold of the Elector's lock: from the grant to the release
// or the loss.
type term struct {
	conn    *sql.Conn
	lock    *Lock
	sid     int64         // the session's server id
	granted time.Time     // when the lock was granted
	stop    chan struct{} // closed when the Elector stops the beacon
	stopped chan struct{} // closed when the beacon has ended

	mu      sync.Mutex
	lostWhy error     // set once the hold is found lost
	led     time.Time // when lead was called; zero before
}

// lost returns why the hold was lost, or nil.
func (t *term) lost() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lostWhy
}

// ledSince returns when lead was called, or zero.
func (t *term) ledSince() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.led
}

// stopping reports whether the Elector is stopping the beacon.
func (t *term) stopping() bool {
	select {
	case <-t.stop:
		return true
	default:
		return false
	}
}

// campaign pins a session and waits there until it holds the lock or ctx
// ends.
func (e *Elector) campaign(ctx context.Context) (*term, error) {
	conn, err := e.reg.pool.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: no session from the pool: %w", ErrNotAcquired, err)
	}
	tx := e.db.Session(&gorm.Session{NewDB: true, Context: ctx})
	tx.Statement.ConnPool = conn
	l, err := New(tx, e.key)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	e.log(ctx, slog.LevelDebug, "dlock: campaigning", slog.String("key", keyText(e.key)))
	ok, err := l.Acquire(ctx)
	if err == nil && !ok {
		err = fmt.Errorf("%w: %s is busy", ErrNotAcquired, keyText(e.key))
	}
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return &term{conn: conn, lock: l, sid: l.bind.sess.idSeen.Load(), granted: time.Now(), stop: make(chan struct{}), stopped: make(chan struct{})}, nil
}

// serve runs one term: the beacon, the fence, lead, the release. It
// returns whether Run pauses before campaigning again, and the error Run
// returns.
func (e *Elector) serve(ctx context.Context, t *term, lead func(context.Context) error) (pause bool, err error) {
	lctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	t.lock.notifyLost(lossFunc(func(why error) { // under the Lock's state mutex: be quick
		if !errors.Is(why, ErrLockLost) {
			why = fmt.Errorf("%w: %w", ErrLockLost, why)
		}
		t.mu.Lock()
		if t.lostWhy == nil {
			t.lostWhy = why
		}
		t.mu.Unlock()
		e.leading.Store(false)
		cancel(why)
	}))
	go e.runBeacon(ctx, t)
	stop := context.AfterFunc(lctx, func() {
		if why := t.lost(); why != nil && !t.ledSince().IsZero() {
			e.reportLost(t, why)
		}
	})
	defer stop()

	fence := time.NewTimer(leadFence)
	select {
	case <-lctx.Done():
		fence.Stop()
		_ = e.endTerm(ctx, t) // logged
		if why := t.lost(); why != nil && ctx.Err() == nil {
			e.log(ctx, slog.LevelWarn, "dlock: lost the lock before leading", slog.String("key", keyText(e.key)),
				slog.String("reason", why.Error()))
		}
		return false, nil
	case <-fence.C:
	}

	t.mu.Lock()
	t.led = time.Now()
	t.mu.Unlock()
	e.leading.Store(true)
	e.elected(ctx, t)
	returned := false
	defer func() {
		if !returned { // lead panicked or called runtime.Goexit
			e.leading.Store(false)
			cancel(errLeadPanicked)
			_ = e.endTerm(ctx, t) // logged; the panic goes on
			e.resigned(ctx, t, errLeadPanicked)
		}
	}()
	leadErr := lead(lctx)
	returned = true
	e.leading.Store(false)
	lost := t.lost()
	cancel(nil)
	relErr := e.endTerm(ctx, t)
	switch {
	case lost != nil:
		if leadErr != nil && !errors.Is(leadErr, context.Canceled) && !errors.Is(leadErr, ErrLockLost) {
			e.log(ctx, slog.LevelWarn, "dlock: lead returned an error after the loss", slog.String("key", keyText(e.key)),
				slog.String("error", leadErr.Error()))
		}
		return false, nil
	case ctx.Err() != nil:
		e.resigned(ctx, t, leadErr)
		if leadErr != nil && !errors.Is(leadErr, context.Canceled) && !errors.Is(leadErr, context.DeadlineExceeded) &&
			!errors.Is(leadErr, context.Cause(ctx)) {
			return false, leadErr
		}
		return false, nil
	case leadErr != nil:
		e.resigned(ctx, t, leadErr)
		return false, joinErrors(leadErr, relErr)
	}
	e.resigned(ctx, t, nil)
	return true, nil
}

// errLeadPanicked is the Err of the Resigned event when lead panicked;
// the panic goes on to Run's caller.
var errLeadPanicked = errors.New("dlock: lead panicked")

// endTerm stops the beacon, releases the lock and gives the session back
// to the pool. It returns the release's error, which it also logs, unless
// the hold was lost (the loss was told already).
func (e *Elector) endTerm(ctx context.Context, t *term) error {
	if !e.stopBeacon(ctx, t) {
		// The session does not answer: it is lost, and given back (or
		// dropped) once its beacon returns.
		t.lock.markLost(fmt.Errorf("%w: the leader's session stopped answering", ErrLockLost))
		go func() {
			<-t.stopped
			_ = t.lock.Close(context.WithoutCancel(ctx))
			_ = t.conn.Close()
		}()
		return nil
	}
	err := t.lock.Close(quiet(ctx))
	_ = t.conn.Close()
	if err != nil && t.lost() == nil {
		e.log(ctx, slog.LevelWarn, "dlock: releasing the leader's lock failed", slog.String("key", keyText(e.key)),
			slog.String("error", err.Error()))
		return err
	}
	return nil
}

// beaconText returns the statement the leader's session runs, again and
// again, while it holds the lock: a sleep of beaconPeriod whose comment
// carries the identity and the grant's time.
func (e *Elector) beaconText(granted time.Time) string {
	comment := " " + beaconMark + e.identity + beaconSince + granted.UTC().Format(beaconTime) + beaconEnd
	switch b := e.reg.server.backend.(type) {
	case pgBackend:
		return "SELECT pg_sleep(" + beaconSleep + ")" + comment
	case *mysqlBackend:
		if b.mariadb {
			// max_statement_time would cut it short; MySQL's
			// max_execution_time applies to SELECT only.
			return "SET STATEMENT max_statement_time=0 FOR DO SLEEP(" + beaconSleep + ")" + comment
		}
	}
	return "DO SLEEP(" + beaconSleep + ")" + comment
}

// The beacon: its period, as the SQL writes it, and the parts of its
// comment around the identity and the grant's time.
const (
	beaconPeriod = 500 * time.Millisecond
	beaconSleep  = "0.5"
	beaconMark   = "/* dlock leader: "
	beaconSince  = " since "
	beaconEnd    = " */"
	beaconTime   = "2006-01-02T15:04:05.000Z07:00"
)

// runBeacon runs the beacon on the term's session until the Elector stops
// it, and marks the hold lost when the session ends under it: at once when
// the server ends it (KILL, pg_terminate_backend), since the beacon waits
// for the server's answer. A beacon cut short on a live session (a
// statement_timeout, an operator's KILL QUERY) runs again after
// beaconPause.
func (e *Elector) runBeacon(ctx context.Context, t *term) {
	defer close(t.stopped)
	stmt := e.beaconText(t.granted)
	bctx := quiet(ctx) // the driver would close the session when ctx ends
	for !t.stopping() {
		_, err := t.conn.ExecContext(bctx, stmt)
		if t.stopping() || err == nil {
			continue
		}
		if e.reg.server.backend.classify(err) != failInterrupted {
			t.lock.markLost(fmt.Errorf("%w: the leader's session ended: %w", ErrLockLost, err))
			return
		}
		pause := time.NewTimer(beaconPause)
		select {
		case <-t.stop:
			pause.Stop()
		case <-pause.C:
		}
	}
}

// stopBeacon ends the beacon from a control connection (KILL QUERY,
// pg_cancel_backend, sent again every beaconCancelEvery while it runs) and
// waits for it. Without a control connection, the beacon ends by itself
// within beaconPeriod. If it has not ended within beaconStopBound plus
// that, the session is ended (through a deadline on its network
// connection where dlock knows it, else from a control connection) and
// stopBeacon reports false.
func (e *Elector) stopBeacon(ctx context.Context, t *term) bool {
	close(t.stop)
	bound := time.NewTimer(beaconStopBound + beaconPeriod)
	defer bound.Stop()
	for sent := 0; ; sent++ {
		select {
		case <-t.stopped:
			return true
		default:
		}
		if sent*int(beaconCancelEvery) < int(beaconStopBound) {
			cctx, cancel := context.WithTimeout(quiet(ctx), beaconStopBound)
			_ = e.reg.server.backend.cancel(cctx, e.reg.pool, t.sid)
			cancel()
		}
		again := time.NewTimer(beaconCancelEvery)
		select {
		case <-t.stopped:
			again.Stop()
			return true
		case <-again.C:
			continue
		case <-bound.C:
			again.Stop()
		}
		break
	}
	if nc := t.lock.bind.sess.overrun.netConn; nc != nil {
		_ = nc.SetDeadline(time.Now())
	} else {
		tctx, cancel := context.WithTimeout(quiet(ctx), e.reg.cfg.ReleaseTimeout)
		_ = e.reg.server.backend.terminate(tctx, e.reg.pool, t.sid)
		cancel()
	}
	return false
}

// Leader is who leads an election, as any process can read it.
type Leader struct {
	// Holder is the leader's session, as [Holders] shows it, except Since:
	// when it was granted the lock, by the leader's clock, to the
	// millisecond (from its beacon; a quarter of a second before lead was
	// called). While an Elector holds the lock its session runs the beacon
	// over and over: State is "active" on PostgreSQL ("User sleep" on
	// MySQL and MariaDB) and Query is the beacon.
	Holder
	// Identity is the leader's [Identity], read from the beacon; "" when
	// the session that holds the lock is not an Elector's (a [WithLock],
	// `dlock hold`), or when the server hides its statement from this
	// user (PostgreSQL: pg_read_all_stats; MySQL: PROCESS).
	Identity string
}

// Leader returns who holds the Elector's lock now, and whether anyone
// does, from the server's tables ([Holders]); the Elector need not run,
// so any process can ask with an Elector made by [NewElector] for the
// purpose. It blocks for one statement, or two a few milliseconds apart
// when the first finds the holder between two beacons, and returns ctx's
// error when ctx ends first.
func (e *Elector) Leader(ctx context.Context) (Leader, bool, error) {
	for try := 0; ; try++ {
		hs, err := Holders(ctx, e.db, e.key)
		if err != nil {
			return Leader{}, false, err
		}
		i := slices.IndexFunc(hs, func(h Holder) bool { return h.Granted })
		if i < 0 {
			return Leader{}, false, nil
		}
		l := Leader{Holder: hs[i]}
		if id, since, ok := parseBeacon(l.Query); ok {
			l.Identity, l.Since = id, since
			return l, true, nil
		}
		if try > 0 || l.Query != "" {
			return l, true, nil
		}
		if !sleepCtx(ctx, 5*time.Millisecond) {
			return Leader{}, false, ctx.Err()
		}
	}
}

// parseBeacon returns the identity and the grant's time in a beacon's
// text, and whether stmt is a beacon.
func parseBeacon(stmt string) (id string, granted time.Time, ok bool) {
	i := strings.Index(stmt, beaconMark)
	if i < 0 || !strings.Contains(stmt[:i], "SLEEP("+beaconSleep+")") && !strings.Contains(stmt[:i], "pg_sleep("+beaconSleep+")") {
		return "", time.Time{}, false
	}
	rest, ok := strings.CutSuffix(stmt[i+len(beaconMark):], beaconEnd)
	if !ok {
		return "", time.Time{}, false
	}
	j := strings.LastIndex(rest, beaconSince)
	if j < 0 {
		return "", time.Time{}, false
	}
	granted, err := time.Parse(beaconTime, rest[j+len(beaconSince):])
	if err != nil {
		return "", time.Time{}, false
	}
	return rest[:j], granted, true
}

// ElectionObserver is told when an Elector is elected, resigns, or loses
// its lead. A Plugin.Observer that also implements it is told; its methods
// run on the goroutine of Run (LeadershipLost on the goroutine that
// found the loss), and must return quickly.
type ElectionObserver interface {
	// Elected is called when the Elector is about to call lead.
	Elected(ctx context.Context, e ElectionEvent)
	// Resigned is called when lead has returned (or panicked) and the
	// lock was released, with lead's error (Err); not after a loss.
	Resigned(ctx context.Context, e ElectionEvent)
	// LeadershipLost is called once when the hold is found lost while
	// lead runs, with why (Err, matching ErrLockLost).
	LeadershipLost(e ElectionEvent)
}

// ElectionEvent describes one event of an Elector.
type ElectionEvent struct {
	Key       any    // the key given to NewElector
	DBKey     any    // what the server sees: int64 or the MySQL name
	Identity  string // the Elector's Identity
	SessionID int64  // the server's id of the leader's session
	// Led is how long it led, for Resigned and LeadershipLost.
	Led time.Duration
	// Err: for Resigned, lead's error (nil when it returned nil); for
	// LeadershipLost, why.
	Err error
}

// event returns the event of term t.
func (e *Elector) event(t *term) ElectionEvent {
	ev := ElectionEvent{Key: e.key, DBKey: e.dbKey, Identity: e.identity, SessionID: t.sid}
	if led := t.ledSince(); !led.IsZero() {
		ev.Led = time.Since(led)
	}
	return ev
}

// observer returns the Plugin's Observer if it is an ElectionObserver.
func (e *Elector) observer() ElectionObserver {
	o, _ := e.reg.cfg.Observer.(ElectionObserver)
	return o
}

func (e *Elector) elected(ctx context.Context, t *term) {
	ev := e.event(t)
	if o := e.observer(); o != nil {
		o.Elected(ctx, ev)
	}
	e.log(ctx, slog.LevelInfo, "dlock: elected", slog.String("key", keyText(e.key)),
		slog.String("identity", e.identity), slog.Int64("session", t.sid))
}

func (e *Elector) resigned(ctx context.Context, t *term, err error) {
	ev := e.event(t)
	ev.Err = err
	if o := e.observer(); o != nil {
		o.Resigned(ctx, ev)
	}
	attrs := []slog.Attr{
		slog.String("key", keyText(e.key)), slog.String("identity", e.identity),
		slog.Int64("session", t.sid), slog.Duration("led", ev.Led),
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	e.log(ctx, slog.LevelInfo, "dlock: resigned", attrs...)
}

func (e *Elector) reportLost(t *term, why error) {
	ev := e.event(t)
	ev.Err = why
	if o := e.observer(); o != nil {
		o.LeadershipLost(ev)
	}
	e.log(context.Background(), slog.LevelWarn, "dlock: leadership lost", slog.String("key", keyText(e.key)),
		slog.String("identity", e.identity), slog.Int64("session", t.sid), slog.Duration("led", ev.Led),
		slog.String("reason", why.Error()))
}

// log writes a record to the Plugin's Logger, if it takes its level.
func (e *Elector) log(ctx context.Context, level slog.Level, msg string, attrs ...slog.Attr) {
	if lg := e.reg.cfg.Logger; lg != nil && lg.Enabled(ctx, level) {
		lg.LogAttrs(ctx, level, msg, attrs...)
	}
}

// backoff is the pause after campaigns that failed in a row.
type backoff struct{ next time.Duration }

// delay returns the next pause: the current step, less up to half of it
// at random, then doubles the step up to campaignRetryMax.
func (b *backoff) delay() time.Duration {
	if b.next == 0 {
		b.next = campaignRetryMin
	}
	d := b.next
	b.next = min(2*b.next, campaignRetryMax)
	return d - rand.N(d/2+1)
}

// sleepCtx sleeps d, or until ctx ends; it reports whether it slept d.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
