package dlockotel

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	"go.opentelemetry.io/otel/codes"
	"gorm.io/gorm"
)

// The tests in this file lock on the real databases (see helpers_test.go)
// with the Observer registered on the pool, and read the spans and
// metrics that reached an in-memory SDK.

func TestGrantedAndReleased(t *testing.T) {
	eachServer(t, func(t *testing.T, s server) {
		o := newSDK(t)
		db := openDB(t, s, o.observer())
		key := uniqueKey(t)
		l, id := pinnedLock(t, s, db, key)
		ctx := context.Background()
		if ok, err := l.Acquire(ctx); !ok || err != nil {
			t.Fatalf("Acquire() = %v, %v; want true, nil", ok, err)
		}
		time.Sleep(50 * time.Millisecond)
		if err := l.Release(ctx); err != nil {
			t.Fatalf("Release() = %v", err)
		}

		sp := o.oneSpan(t, SpanAcquire)
		wantAttr(t, sp, AttrKey, `"`+key+`"`)
		wantAttr(t, sp, AttrDBKey, l.DBKey())
		wantAttr(t, sp, AttrMode, "exclusive")
		wantAttr(t, sp, AttrSessionID, id)
		wantAttr(t, sp, AttrOutcome, "granted")
		if sp.Status().Code != codes.Unset {
			t.Fatalf("acquire span status = %v, want Unset", sp.Status())
		}

		rm := o.collect(t)
		granted := AttrOutcome.String("granted")
		if n, _ := countOf(rm, MetricAcquires, granted); n != 1 {
			t.Fatalf("%s{granted} = %d, want 1", MetricAcquires, n)
		}
		if n, _ := countOf(rm, MetricAcquireDuration, granted); n != 1 {
			t.Fatalf("%s{granted} count = %d, want 1", MetricAcquireDuration, n)
		}
		if n, sum := countOf(rm, MetricHoldDuration); n != 1 || sum < 0.05 {
			t.Fatalf("%s = count %d, sum %vs; want 1, at least 0.05s", MetricHoldDuration, n, sum)
		}
		if n, _ := countOf(rm, MetricLost); n != 0 {
			t.Fatalf("%s = %d, want 0", MetricLost, n)
		}
	})
}

// acquireAgainstHolder holds key on a session of a pool without the
// observer, then runs one Acquire of key with opts on a pool that has
// it, cancelled after cancelAfter (0: never), and returns what it
// reported.
func acquireAgainstHolder(t *testing.T, s server, cancelAfter time.Duration, opts ...dlock.Option) (*sdk, error) {
	t.Helper()
	key := uniqueKey(t)
	holder, _ := pinnedLock(t, s, openDB(t, s, nil), key)
	if ok, err := holder.Acquire(context.Background(), dlock.NoWait()); !ok || err != nil {
		t.Fatalf("holder: Acquire() = %v, %v; want true, nil", ok, err)
	}
	o := newSDK(t)
	l, _ := pinnedLock(t, s, openDB(t, s, o.observer()), key)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if cancelAfter > 0 {
		defer time.AfterFunc(cancelAfter, cancel).Stop()
	}
	ok, err := l.Acquire(ctx, opts...)
	if ok {
		t.Fatalf("Acquire() = true, %v; want false while another session holds it", err)
	}
	return o, err
}

// wantOutcome checks the one acquire span and the acquire metrics for
// outcome, and that the wait took at least minWait.
func wantOutcome(t *testing.T, o *sdk, outcome string, minWait time.Duration) {
	t.Helper()
	sp := o.oneSpan(t, SpanAcquire)
	wantAttr(t, sp, AttrOutcome, outcome)
	if sp.Status().Code != codes.Unset {
		t.Fatalf("%s acquire span status = %v, want Unset (an outcome, not a failure)", outcome, sp.Status())
	}
	rm := o.collect(t)
	attr := AttrOutcome.String(outcome)
	if n, _ := countOf(rm, MetricAcquires, attr); n != 1 {
		t.Fatalf("%s{%s} = %d, want 1; series %v", MetricAcquires, outcome, n, seriesOf(rm, MetricAcquires))
	}
	if n, sum := countOf(rm, MetricAcquireDuration, attr); n != 1 || sum < minWait.Seconds() {
		t.Fatalf("%s{%s} = count %d, sum %vs; want 1, at least %v", MetricAcquireDuration, outcome, n, sum, minWait)
	}
	if n, _ := countOf(rm, MetricHoldDuration); n != 0 {
		t.Fatalf("%s count = %d, want 0 (nothing was held)", MetricHoldDuration, n)
	}
}

func TestBusy(t *testing.T) {
	eachServer(t, func(t *testing.T, s server) {
		o, err := acquireAgainstHolder(t, s, 0, dlock.NoWait())
		if err != nil {
			t.Fatalf("Acquire(NoWait) error = %v, want nil", err)
		}
		wantOutcome(t, o, "busy", 0)
	})
}

func TestTimedOut(t *testing.T) {
	eachServer(t, func(t *testing.T, s server) {
		const timeout = 300 * time.Millisecond
		o, err := acquireAgainstHolder(t, s, 0, dlock.Timeout(timeout))
		if err != nil {
			t.Fatalf("Acquire(Timeout) error = %v, want nil", err)
		}
		wantOutcome(t, o, "timed_out", timeout)
	})
}

func TestCanceled(t *testing.T) {
	eachServer(t, func(t *testing.T, s server) {
		const after = 200 * time.Millisecond
		o, err := acquireAgainstHolder(t, s, after)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Acquire() error = %v, want context.Canceled", err)
		}
		wantOutcome(t, o, "canceled", after)
	})
}

// The dlock.with_lock span is the parent of its acquire span and of the
// spans fn starts from tx.Statement.Context; the release is an event on it.
func TestWithLockSpans(t *testing.T) {
	eachServer(t, func(t *testing.T, s server) {
		o := newSDK(t)
		db := openDB(t, s, o.observer())
		key := uniqueKey(t)
		err := dlock.WithLock(context.Background(), db, key, func(tx *gorm.DB) error {
			_, span := o.tp.Tracer("test").Start(tx.Statement.Context, "work")
			defer span.End()
			return tx.Exec("SELECT 1").Error
		}, dlock.Timeout(5*time.Second))
		if err != nil {
			t.Fatalf("WithLock() = %v", err)
		}
		wl, acq, work := o.oneSpan(t, SpanWithLock), o.oneSpan(t, SpanAcquire), o.oneSpan(t, "work")
		if !isParent(wl, acq) {
			t.Fatalf("acquire span's parent = %v, want the with_lock span %v", acq.Parent().SpanID(), wl.SpanContext().SpanID())
		}
		if !isParent(wl, work) {
			t.Fatalf("fn's span's parent = %v, want the with_lock span %v", work.Parent().SpanID(), wl.SpanContext().SpanID())
		}
		wantAttr(t, wl, AttrKey, `"`+key+`"`)
		wantAttr(t, acq, AttrOutcome, "granted")
		if wl.Status().Code != codes.Unset {
			t.Fatalf("with_lock status = %v, want Unset", wl.Status())
		}
		var released bool
		for _, ev := range wl.Events() {
			released = released || ev.Name == EventRelease
		}
		if !released {
			t.Fatalf("with_lock span events = %v, want a %s", wl.Events(), EventRelease)
		}
		if n, _ := countOf(o.collect(t), MetricHoldDuration); n != 1 {
			t.Fatalf("%s count = %d, want 1", MetricHoldDuration, n)
		}
	})
}

// A holder's session killed from another connection: dlock's monitor
// finds the loss, dlock.lost counts it, the hold's duration is recorded,
// and the with_lock span ends in Error.
func TestLost(t *testing.T) {
	eachServer(t, func(t *testing.T, s server) {
		o := newSDK(t)
		db := openDB(t, s, o.observer())
		killer := openDB(t, s, nil)
		key := uniqueKey(t)
		done := make(chan error, 1)
		ids := make(chan int64, 1)
		go func() {
			done <- dlock.WithLock(context.Background(), db, key, func(tx *gorm.DB) error {
				var id int64
				if err := tx.Raw(sessionIDQuery(s)).Scan(&id).Error; err != nil {
					return err
				}
				ids <- id
				<-tx.Statement.Context.Done()
				return context.Cause(tx.Statement.Context)
			})
		}()
		var id int64
		select {
		case id = <-ids:
		case err := <-done:
			t.Fatalf("WithLock() = %v before fn ran", err)
		case <-time.After(10 * time.Second):
			t.Fatal("fn did not run within 10s")
		}
		kill(t, s, killer, id)
		eventually(t, MetricLost+" = 1", func() bool {
			n, _ := countOf(o.collect(t), MetricLost)
			return n == 1
		})
		select {
		case err := <-done:
			if !errors.Is(err, dlock.ErrLockLost) {
				t.Fatalf("WithLock() = %v, want ErrLockLost", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("WithLock did not return within 10s of the loss")
		}
		rm := o.collect(t)
		if n, _ := countOf(rm, MetricLost); n != 1 {
			t.Fatalf("%s = %d, want 1", MetricLost, n)
		}
		if n, _ := countOf(rm, MetricHoldDuration); n != 1 {
			t.Fatalf("%s count = %d, want 1 (the hold, to its loss)", MetricHoldDuration, n)
		}
		wl := o.oneSpan(t, SpanWithLock)
		if wl.Status().Code != codes.Error {
			t.Fatalf("with_lock status = %v, want Error", wl.Status())
		}
	})
}

// dlock.hold.duration runs from the grant, not from the start of the
// acquire: a waiter that waited about 400 ms and then held the lock
// briefly records a hold far shorter than its wait.
func TestHoldExcludesWait(t *testing.T) {
	eachServer(t, func(t *testing.T, s server) {
		key := uniqueKey(t)
		holder, _ := pinnedLock(t, s, openDB(t, s, nil), key)
		if ok, err := holder.Acquire(context.Background(), dlock.NoWait()); !ok || err != nil {
			t.Fatalf("holder: Acquire() = %v, %v; want true, nil", ok, err)
		}
		time.AfterFunc(400*time.Millisecond, func() { _ = holder.Release(context.Background()) })
		o := newSDK(t)
		l, _ := pinnedLock(t, s, openDB(t, s, o.observer()), key)
		if ok, err := l.Acquire(context.Background(), dlock.Timeout(10*time.Second)); !ok || err != nil {
			t.Fatalf("Acquire() = %v, %v; want true, nil", ok, err)
		}
		if err := l.Release(context.Background()); err != nil {
			t.Fatalf("Release() = %v", err)
		}
		rm := o.collect(t)
		_, wait := countOf(rm, MetricAcquireDuration, AttrOutcome.String("granted"))
		n, held := countOf(rm, MetricHoldDuration)
		if n != 1 || held >= wait {
			t.Fatalf("%s = count %d, sum %.3fs; want 1 hold shorter than the %.3fs wait before it",
				MetricHoldDuration, n, held, wait)
		}
	})
}
