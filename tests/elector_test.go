package tests

// Leader election (issue #19): three Electors on three pools, a killed
// leader, cancellation, lead's error and panic, and the campaign's backoff
// when the server cannot be reached.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	"gorm.io/gorm"
)

// electionRecorder is an Observer that is also an ElectionObserver.
type electionRecorder struct {
	recorder
	emu     sync.Mutex
	elected []dlock.ElectionEvent
	resigns []dlock.ElectionEvent
	losses  []dlock.ElectionEvent
}

func (r *electionRecorder) Elected(_ context.Context, e dlock.ElectionEvent) {
	r.emu.Lock()
	r.elected = append(r.elected, e)
	r.emu.Unlock()
}

func (r *electionRecorder) Resigned(_ context.Context, e dlock.ElectionEvent) {
	r.emu.Lock()
	r.resigns = append(r.resigns, e)
	r.emu.Unlock()
}

func (r *electionRecorder) LeadershipLost(e dlock.ElectionEvent) {
	r.emu.Lock()
	r.losses = append(r.losses, e)
	r.emu.Unlock()
}

func (r *electionRecorder) counts() (elected, resigned, lost int) {
	r.emu.Lock()
	defer r.emu.Unlock()
	return len(r.elected), len(r.resigns), len(r.losses)
}

// term is one call of lead, as the test saw it.
type term struct {
	candidate int
	started   time.Time
	ended     time.Time
	cause     error
}

// candidates runs n Electors, each on its own pool, and records every
// call of lead.
type candidates struct {
	t        *testing.T
	electors []*dlock.Elector
	recs     []*electionRecorder
	active   atomic.Int32 // leads running now
	overlaps atomic.Int32 // times a lead began while another ran
	terms    chan term    // a lead began (ended zero)
	ends     chan term    // a lead's ctx ended
	errs     []chan error // Run's result, per candidate
	cancel   context.CancelFunc
}

func startCandidates(t *testing.T, b *testDB, key string, n int) *candidates {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &candidates{t: t, terms: make(chan term, 16), ends: make(chan term, 16), cancel: cancel}
	t.Cleanup(cancel)
	for i := range n {
		rec := &electionRecorder{recorder: recorder{level: slog.LevelDebug}}
		db := b.openLocked(t, dlock.Plugin{Observer: rec, Logger: slog.New(rec)})
		e, err := dlock.NewElector(db, key, dlock.Identity(fmt.Sprintf("candidate-%d", i)))
		if err != nil {
			t.Fatalf("NewElector: %v", err)
		}
		c.electors = append(c.electors, e)
		c.recs = append(c.recs, rec)
		done := make(chan error, 1)
		c.errs = append(c.errs, done)
		go func() {
			done <- e.Run(ctx, func(ctx context.Context) error {
				if c.active.Add(1) > 1 {
					c.overlaps.Add(1)
				}
				c.terms <- term{candidate: i, started: time.Now()}
				<-ctx.Done()
				c.active.Add(-1)
				c.ends <- term{candidate: i, ended: time.Now(), cause: context.Cause(ctx)}
				return ctx.Err()
			})
		}()
	}
	return c
}

// nextLeader waits for a lead to begin.
func (c *candidates) nextLeader(within time.Duration) term {
	c.t.Helper()
	select {
	case tm := <-c.terms:
		return tm
	case <-time.After(within):
		c.t.Fatalf("no leader within %v", within)
		return term{}
	}
}

// nextEnd waits for a lead's ctx to end.
func (c *candidates) nextEnd(within time.Duration) term {
	c.t.Helper()
	select {
	case tm := <-c.ends:
		return tm
	case <-time.After(within):
		c.t.Fatalf("no lead ended within %v", within)
		return term{}
	}
}

// leaders returns which Electors say they lead.
func (c *candidates) leaders() []int {
	var ls []int
	for i, e := range c.electors {
		if e.IsLeader() {
			ls = append(ls, i)
		}
	}
	return ls
}

// Three Electors on three pools: one leads, the others wait in the server;
// killing the leader's session hands over at once, the old lead's ctx
// ends with ErrLockLost, two leads never run at once; cancelling returns
// every Run within a second and frees the key.
func TestElectorHandOver(t *testing.T) {
	needLongRun(t)
	eachBackend(t, func(t *testing.T, b *testDB) {
		key := b.UniqueKey(t)
		admin := b.openLocked(t, dlock.Plugin{})
		c := startCandidates(t, b, key, 3)
		watcher, err := dlock.NewElector(admin, key)
		if err != nil {
			t.Fatalf("NewElector: %v", err)
		}

		first := c.nextLeader(5 * time.Second)
		if got := c.leaders(); len(got) != 1 || got[0] != first.candidate {
			t.Fatalf("IsLeader true for %v, want [%d]", got, first.candidate)
		}
		// Followers wait in the server, one session each.
		var hs []dlock.Holder
		deadline := time.Now().Add(3 * time.Second)
		for {
			hs, err = dlock.Holders(context.Background(), admin, key)
			if err != nil {
				t.Fatalf("Holders: %v", err)
			}
			if len(hs) == 3 || time.Now().After(deadline) {
				break
			}
			time.Sleep(pollStep)
		}
		if len(hs) != 3 || !hs[0].Granted || hs[1].Granted || hs[2].Granted {
			t.Fatalf("Holders = %+v, want the leader and two waiters", hs)
		}
		ld, ok, err := watcher.Leader(context.Background())
		want := fmt.Sprintf("candidate-%d", first.candidate)
		if err != nil || !ok || ld.Identity != want || ld.SessionID != hs[0].SessionID {
			t.Fatalf("Leader() = %+v, %v, %v; want %s on session %d", ld, ok, err, want, hs[0].SessionID)
		}
		if since := time.Since(ld.Since); ld.Since.IsZero() || since < -time.Second || since > time.Since(first.started)+2*time.Second {
			t.Errorf("Leader().Since = %v (%v ago), want about when %s was elected (%v ago)", ld.Since, since, want, time.Since(first.started))
		}
		t.Logf("leader %s on session %d since %v; Query %q", ld.Identity, ld.SessionID, ld.Since.Format(time.RFC3339Nano), ld.Query)

		prev := first
		for round := range 2 {
			ld, _, err := watcher.Leader(context.Background())
			if err != nil {
				t.Fatalf("Leader: %v", err)
			}
			killed := time.Now()
			b.Kill(t, ld.SessionID)
			end := c.nextEnd(5 * time.Second)
			if end.candidate != prev.candidate || !errors.Is(end.cause, dlock.ErrLockLost) {
				t.Fatalf("round %d: lead of candidate %d ended with %v; want candidate %d, ErrLockLost", round, end.candidate, end.cause, prev.candidate)
			}
			if d := end.ended.Sub(killed); d > 1500*time.Millisecond {
				t.Errorf("round %d: the old lead's ctx ended %v after the kill, want within 1.5 s", round, d)
			} else {
				t.Logf("round %d: the old lead's ctx ended %v after the kill: %v", round, d.Round(time.Millisecond), end.cause)
			}
			next := c.nextLeader(3 * time.Second)
			if next.candidate == prev.candidate {
				t.Errorf("round %d: candidate %d leads again; want another", round, next.candidate)
			}
			t.Logf("round %d: candidate %d leads %v after the kill", round, next.candidate, next.started.Sub(killed).Round(time.Millisecond))
			prev = next
		}

		c.cancel()
		cancelled := time.Now()
		for i, done := range c.errs {
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Run of candidate %d = %v, want context.Canceled", i, err)
				}
			case <-time.After(time.Second - time.Since(cancelled)):
				t.Fatalf("Run of candidate %d did not return within 1 s of the cancel", i)
			}
		}
		t.Logf("every Run returned %v after the cancel", time.Since(cancelled).Round(time.Millisecond))
		if hs, err := dlock.Holders(context.Background(), admin, key); err != nil || len(hs) != 0 {
			t.Fatalf("Holders after the cancel = %+v, %v; want none", hs, err)
		}
		if n := c.overlaps.Load(); n != 0 {
			t.Fatalf("a lead began %d time(s) while another ran", n)
		}
		if got := c.leaders(); len(got) != 0 {
			t.Fatalf("IsLeader true for %v after Run returned", got)
		}
		var elected, resigned, lost int
		for _, r := range c.recs {
			e, r, l := r.counts()
			elected, resigned, lost = elected+e, resigned+r, lost+l
		}
		if elected != 3 || lost != 2 || resigned != 1 {
			t.Errorf("Observer: %d elected, %d lost, %d resigned; want 3, 2, 1", elected, lost, resigned)
		}
		logged := map[string]int{}
		for _, r := range c.recs {
			r.mu.Lock()
			for _, rec := range r.records {
				logged[rec.Message]++
			}
			r.mu.Unlock()
		}
		if logged["dlock: elected"] != 3 || logged["dlock: leadership lost"] != 2 || logged["dlock: resigned"] != 1 {
			t.Errorf("Logger: %v; want 3 elected, 2 leadership lost, 1 resigned", logged)
		}
	})
}

// A lead error that is not a loss stops Run, which returns it with the
// lock released.
func TestElectorLeadError(t *testing.T) {
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		key := b.UniqueKey(t)
		db := b.openLocked(t, dlock.Plugin{})
		e, err := dlock.NewElector(db, key)
		if err != nil {
			t.Fatalf("NewElector: %v", err)
		}
		boom := errors.New("boom")
		err = e.Run(context.Background(), func(ctx context.Context) error { return boom })
		if !errors.Is(err, boom) {
			t.Fatalf("Run() = %v, want boom", err)
		}
		if hs, err := dlock.Holders(context.Background(), db, key); err != nil || len(hs) != 0 {
			t.Fatalf("Holders after Run = %+v, %v; want none", hs, err)
		}
		if e.IsLeader() {
			t.Fatalf("IsLeader() = true after Run returned")
		}
	})
}

// A panic in lead releases the lock, then goes on to Run's caller.
func TestElectorPanic(t *testing.T) {
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		key := b.UniqueKey(t)
		db := b.openLocked(t, dlock.Plugin{})
		e, err := dlock.NewElector(db, key)
		if err != nil {
			t.Fatalf("NewElector: %v", err)
		}
		var held []dlock.Holder
		got := func() (r any) {
			defer func() { r = recover() }()
			_ = e.Run(context.Background(), func(ctx context.Context) error {
				held, _ = dlock.Holders(context.Background(), db, key)
				panic("lead failed")
			})
			return nil
		}()
		if got != "lead failed" {
			t.Fatalf("Run panicked with %v, want the panic of lead", got)
		}
		if len(held) != 1 {
			t.Fatalf("Holders while lead ran = %+v, want the leader", held)
		}
		if hs, err := dlock.Holders(context.Background(), db, key); err != nil || len(hs) != 0 {
			t.Fatalf("Holders after the panic = %+v, %v; want none", hs, err)
		}
	})
}

// lead returning nil gives leadership up: a waiting rival takes over, and
// the Elector campaigns again.
func TestElectorResign(t *testing.T) {
	needLongRun(t)
	eachBackend(t, func(t *testing.T, b *testDB) {
		key := b.UniqueKey(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var mu sync.Mutex
		var order []string
		var wg sync.WaitGroup
		for _, name := range []string{"a", "b"} {
			db := b.openLocked(t, dlock.Plugin{})
			e, err := dlock.NewElector(db, key, dlock.Identity(name))
			if err != nil {
				t.Fatalf("NewElector: %v", err)
			}
			wg.Go(func() {
				_ = e.Run(ctx, func(ctx context.Context) error {
					mu.Lock()
					order = append(order, name)
					n := len(order)
					mu.Unlock()
					if n >= 4 {
						cancel()
					}
					time.Sleep(50 * time.Millisecond)
					return nil
				})
			})
		}
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for i := 1; i < len(order); i++ {
			if order[i] == order[i-1] {
				t.Fatalf("terms %v: the same Elector led twice in a row while its rival waited", order)
			}
		}
		t.Logf("terms: %v", order)
	})
}

// When the server cannot be reached, the campaign is retried with a
// growing pause, logged each time, and Run still returns at once when its
// ctx ends.
func TestElectorBackoff(t *testing.T) {
	needLongRun(t)
	eachBackend(t, func(t *testing.T, b *testDB) {
		pb, proxy := b.viaProxy(t)
		rec := &recorder{level: slog.LevelWarn}
		db := pb.openLocked(t, dlock.Plugin{Logger: slog.New(rec)})
		e, err := dlock.NewElector(db, b.UniqueKey(t))
		if err != nil {
			t.Fatalf("NewElector: %v", err)
		}
		proxy.close() // connections refused from now on
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start := time.Now()
		err = e.Run(ctx, func(ctx context.Context) error {
			t.Errorf("lead called with the server unreachable")
			return nil
		})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Run() = %v, want context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("Run returned %v after it began, want about 2 s", d)
		}
		rec.mu.Lock()
		var fails int
		for _, r := range rec.records {
			if strings.Contains(r.Message, "campaign failed") {
				fails++
			}
		}
		rec.mu.Unlock()
		if fails < 2 || fails > 6 {
			t.Fatalf("%d failed campaigns logged in 2 s, want 2 to 6 (a growing pause from 250 ms)", fails)
		}
		t.Logf("%d failed campaigns in 2 s", fails)
	})
}

// The beacon ended by someone else on a live session (an operator's KILL
// QUERY or pg_cancel_backend, a statement_timeout) is no loss: the leader
// goes on leading and its beacon runs again.
func TestElectorBeaconInterrupted(t *testing.T) {
	needLongRun(t)
	eachBackend(t, func(t *testing.T, b *testDB) {
		key := b.UniqueKey(t)
		c := startCandidates(t, b, key, 1)
		c.nextLeader(5 * time.Second)
		ld, ok, err := c.electors[0].Leader(context.Background())
		if err != nil || !ok || ld.Identity != "candidate-0" {
			t.Fatalf("Leader() = %+v, %v, %v; want candidate-0", ld, ok, err)
		}
		cancelStmt := fmt.Sprintf("KILL QUERY %d", ld.SessionID)
		if b.Dialect == dialectPostgres {
			cancelStmt = fmt.Sprintf("SELECT pg_cancel_backend(%d)", ld.SessionID)
		}
		if _, err := b.observer(t).ExecContext(context.Background(), cancelStmt); err != nil {
			t.Fatalf("%s: %v", cancelStmt, err)
		}
		select {
		case end := <-c.ends:
			t.Fatalf("the lead ended after its beacon was cancelled: %v", end.cause)
		case <-time.After(1500 * time.Millisecond):
		}
		if !c.electors[0].IsLeader() {
			t.Fatalf("IsLeader() = false after the beacon was cancelled")
		}
		again, ok, err := c.electors[0].Leader(context.Background())
		if err != nil || !ok || again.Identity != "candidate-0" || again.SessionID != ld.SessionID || !again.Since.Equal(ld.Since) {
			t.Fatalf("Leader() after the cancel = %+v, %v, %v; want candidate-0 on session %d since %v", again, ok, err, ld.SessionID, ld.Since)
		}
		c.cancel()
		if err := <-c.errs[0]; !errors.Is(err, context.Canceled) {
			t.Fatalf("Run() = %v, want context.Canceled", err)
		}
	})
}

// With no connection to spare in its pool, an Elector waits for one (no
// failed campaigns, no spinning), leads once it gets one, and still
// returns within a second of its ctx ending, with the lock free: the
// beacon that no control connection can cancel ends with its session.
func TestElectorPoolExhausted(t *testing.T) {
	needLongRun(t)
	eachBackend(t, func(t *testing.T, b *testDB) {
		key := b.UniqueKey(t)
		rec := &recorder{level: slog.LevelWarn}
		db := b.openLocked(t, dlock.Plugin{Logger: slog.New(rec)})
		pool, err := db.DB()
		if err != nil {
			t.Fatalf("DB: %v", err)
		}
		pool.SetMaxOpenConns(2)
		var held []*sql.Conn
		for range 2 {
			conn, err := pool.Conn(context.Background())
			if err != nil {
				t.Fatalf("Conn: %v", err)
			}
			held = append(held, conn)
		}
		defer func() {
			for _, c := range held[1:] {
				_ = c.Close()
			}
		}()
		e, err := dlock.NewElector(db, key)
		if err != nil {
			t.Fatalf("NewElector: %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		leading := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- e.Run(ctx, func(ctx context.Context) error {
				close(leading)
				<-ctx.Done()
				return nil
			})
		}()
		select {
		case <-leading:
			t.Fatalf("led with no connection in the pool")
		case <-time.After(500 * time.Millisecond):
		}
		_ = held[0].Close() // one for the Elector; none to spare
		select {
		case <-leading:
		case <-time.After(3 * time.Second):
			t.Fatalf("no lead within 3 s of a free connection")
		}
		cancel()
		cancelled := time.Now()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Run() = %v, want context.Canceled", err)
			}
		case <-time.After(time.Second):
			t.Fatalf("Run did not return within 1 s of the cancel")
		}
		t.Logf("Run returned %v after the cancel", time.Since(cancelled).Round(time.Millisecond))
		other := b.openLocked(t, dlock.Plugin{})
		deadline := time.Now().Add(2 * time.Second)
		for {
			hs, err := dlock.Holders(context.Background(), other, key)
			if err == nil && len(hs) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Holders after Run = %+v, %v; want none", hs, err)
			}
			time.Sleep(pollStep)
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, r := range rec.records {
			if strings.Contains(r.Message, "campaign failed") {
				t.Errorf("logged %q while waiting for a connection", r.Message)
			}
		}
	})
}

// A leader whose process dies (here: its connections closed under it, as
// the kernel closes a dead process's sockets) frees the lock within about
// a beacon: the server notices when the running beacon ends, and a
// follower leads.
func TestElectorLeaderProcessDies(t *testing.T) {
	needLongRun(t)
	eachBackend(t, func(t *testing.T, b *testDB) {
		key := b.UniqueKey(t)
		pb, proxy := b.viaProxy(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		run := func(db *gorm.DB, id string, leading chan<- string) chan error {
			e, err := dlock.NewElector(db, key, dlock.Identity(id))
			if err != nil {
				t.Fatalf("NewElector: %v", err)
			}
			done := make(chan error, 1)
			go func() {
				done <- e.Run(ctx, func(ctx context.Context) error {
					leading <- id
					<-ctx.Done()
					return nil
				})
			}()
			return done
		}
		leading := make(chan string, 4)
		doomed := run(pb.openLocked(t, dlock.Plugin{}), "doomed", leading)
		if got := <-leading; got != "doomed" {
			t.Fatalf("%s leads, want doomed", got)
		}
		survivor := run(b.openLocked(t, dlock.Plugin{}), "survivor", leading)
		time.Sleep(200 * time.Millisecond) // the survivor waits in the server
		proxy.close()
		died := time.Now()
		select {
		case got := <-leading:
			if got != "survivor" {
				t.Fatalf("%s leads after the leader died, want survivor", got)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no new leader within 5 s of the leader's death")
		}
		took := time.Since(died)
		if took > 2*time.Second {
			t.Errorf("the survivor led %v after the leader died, want within 2 s", took)
		}
		t.Logf("the survivor led %v after the leader's connections closed", took.Round(time.Millisecond))
		cancel()
		for _, done := range []chan error{doomed, survivor} {
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Run() = %v, want context.Canceled", err)
			}
		}
	})
}
