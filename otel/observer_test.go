package dlockotel

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// The tests in this file call the Observer's methods directly, as dlock
// does, and read what reached the SDK.

func TestAcquireSpanAndMetrics(t *testing.T) {
	tests := []struct {
		outcome    dlock.Outcome
		err        error
		wantStatus codes.Code
	}{
		{dlock.OutcomeGranted, nil, codes.Unset},
		{dlock.OutcomeBusy, nil, codes.Unset},
		{dlock.OutcomeTimedOut, dlock.ErrNotAcquired, codes.Unset},
		{dlock.OutcomeCanceled, context.Canceled, codes.Unset},
		{dlock.OutcomeFailed, dlock.ErrDeadlock, codes.Error},
	}
	for _, tt := range tests {
		t.Run(tt.outcome.String(), func(t *testing.T) {
			s := newSDK(t)
			obs := s.observer()
			e := dlock.AcquireEvent{Key: "job", DBKey: int64(-42), Mode: "shared"}
			ctx := obs.AcquireStart(context.Background(), e)
			e.SessionID, e.Outcome, e.Wait, e.Err = 7, tt.outcome, 1500*time.Millisecond, tt.err
			obs.AcquireEnd(ctx, e)

			sp := s.oneSpan(t, SpanAcquire)
			wantAttr(t, sp, AttrKey, `"job"`)
			wantAttr(t, sp, AttrDBKey, int64(-42))
			wantAttr(t, sp, AttrMode, "shared")
			wantAttr(t, sp, AttrSessionID, int64(7))
			wantAttr(t, sp, AttrOutcome, tt.outcome.String())
			wantAttr(t, sp, AttrDBSystemName, "postgresql")
			if tt.wantStatus == codes.Error {
				wantAttr(t, sp, AttrErrorType, "deadlock")
			} else if v, ok := attr(sp, AttrErrorType); ok {
				t.Fatalf("span %s = %v on a span that did not fail", AttrErrorType, v.AsString())
			}
			if got := sp.Status().Code; got != tt.wantStatus {
				t.Fatalf("span status = %v, want %v", got, tt.wantStatus)
			}

			rm := s.collect(t)
			outcome := AttrOutcome.String(tt.outcome.String())
			if n, sum := countOf(rm, MetricAcquireDuration, outcome); n != 1 || sum != 1.5 {
				t.Fatalf("%s{%s} = count %d, sum %v; want 1, 1.5", MetricAcquireDuration, outcome.Value.AsString(), n, sum)
			}
			if n, _ := countOf(rm, MetricAcquires, outcome); n != 1 {
				t.Fatalf("%s{%s} = %d, want 1", MetricAcquires, outcome.Value.AsString(), n)
			}
		})
	}
}

func TestInstruments(t *testing.T) {
	s := newSDK(t)
	obs := s.observer()
	ctx := obs.AcquireStart(context.Background(), dlock.AcquireEvent{Key: 1})
	obs.AcquireEnd(ctx, dlock.AcquireEvent{Key: 1})
	obs.Released(context.Background(), dlock.ReleaseEvent{Key: 1, Held: time.Second})
	obs.Lost(dlock.ReleaseEvent{Key: 1, Held: time.Second})
	rm := s.collect(t)
	for _, want := range []struct{ name, unit string }{
		{MetricAcquireDuration, "s"},
		{MetricAcquires, "{acquire}"},
		{MetricHoldDuration, "s"},
		{MetricLost, "{lock}"},
	} {
		m, ok := metricOf(rm, want.name)
		if !ok {
			t.Fatalf("no metric %s", want.name)
		}
		if m.Unit != want.unit || m.Description == "" {
			t.Errorf("%s: unit %q, description %q; want unit %q and a description", want.name, m.Unit, m.Description, want.unit)
		}
	}
	if n, sum := countOf(rm, MetricHoldDuration); n != 2 || sum != 2 {
		t.Errorf("%s = count %d, sum %v; want 2, 2 (a release and a loss)", MetricHoldDuration, n, sum)
	}
	if n, _ := countOf(rm, MetricLost); n != 1 {
		t.Errorf("%s = %d, want 1", MetricLost, n)
	}
}

func TestKeyAttribute(t *testing.T) {
	for _, withKey := range []bool{false, true} {
		s := newSDK(t)
		var opts []Option
		if withKey {
			opts = append(opts, WithKeyAttribute())
		}
		obs := s.observer(opts...)
		for _, key := range []any{"a", "b", int64(3)} {
			ctx := obs.AcquireStart(context.Background(), dlock.AcquireEvent{Key: key})
			obs.AcquireEnd(ctx, dlock.AcquireEvent{Key: key})
			obs.Released(ctx, dlock.ReleaseEvent{Key: key})
			obs.Lost(dlock.ReleaseEvent{Key: key})
		}
		rm := s.collect(t)
		for _, name := range []string{MetricAcquireDuration, MetricAcquires, MetricHoldDuration, MetricLost} {
			ss := seriesOf(rm, name)
			want := 1
			if withKey {
				want = 3
			}
			if len(ss) != want {
				t.Fatalf("WithKeyAttribute %v: %s has %d series, want %d", withKey, name, len(ss), want)
			}
			for _, sr := range ss {
				if _, has := sr.attrs.Value(AttrKey); has != withKey {
					t.Fatalf("WithKeyAttribute %v: %s series %v", withKey, name, sr.attrs.ToSlice())
				}
			}
		}
		if withKey {
			if n, _ := countOf(rm, MetricAcquires, AttrOutcome.String("granted"), AttrKey.String(`"b"`)); n != 1 {
				t.Fatalf(`%s{granted, "b"} = %d, want 1`, MetricAcquires, n)
			}
		}
	}
}

func TestWithLockSpanParentsAcquire(t *testing.T) {
	s := newSDK(t)
	obs := s.observer()
	ctx := obs.WithLockStart(context.Background(), []byte("k\x00"))
	actx := obs.AcquireStart(ctx, dlock.AcquireEvent{Key: []byte("k\x00")})
	obs.AcquireEnd(actx, dlock.AcquireEvent{Key: []byte("k\x00")})
	obs.Released(ctx, dlock.ReleaseEvent{Key: []byte("k\x00"), Held: 2 * time.Second, Err: errors.New("boom")})
	obs.WithLockEnd(ctx, dlock.ErrLockLost)

	wl, acq := s.oneSpan(t, SpanWithLock), s.oneSpan(t, SpanAcquire)
	if !isParent(wl, acq) {
		t.Fatalf("acquire span's parent = %v, want the with_lock span %v", acq.Parent().SpanID(), wl.SpanContext().SpanID())
	}
	wantAttr(t, wl, AttrKey, `"k\x00"`)
	if wl.Status().Code != codes.Error || !strings.Contains(wl.Status().Description, "lock lost") {
		t.Fatalf("with_lock status = %v, want Error with the error", wl.Status())
	}
	var release bool
	for _, ev := range wl.Events() {
		if ev.Name == EventRelease {
			release = true
			for _, kv := range ev.Attributes {
				if kv.Key == AttrHeld && kv.Value.AsFloat64() != 2 {
					t.Fatalf("release event %s = %v, want 2", AttrHeld, kv.Value.AsFloat64())
				}
			}
		}
	}
	if !release {
		t.Fatalf("with_lock span has no %s event: %v", EventRelease, wl.Events())
	}
}

// An End given a context without this observer's span ends nothing: a
// caller's span in the context stays open.
func TestEndLeavesOtherSpans(t *testing.T) {
	s := newSDK(t)
	obs := s.observer()
	ctx, outer := s.tp.Tracer("test").Start(context.Background(), "caller")
	obs.AcquireEnd(ctx, dlock.AcquireEvent{Outcome: dlock.OutcomeFailed})
	obs.WithLockEnd(ctx, errors.New("x"))
	if len(s.spans.Ended()) != 0 {
		t.Fatalf("ended %d spans, want none", len(s.spans.Ended()))
	}
	outer.End()
	if n, _ := countOf(s.collect(t), MetricAcquires, AttrOutcome.String("failed")); n != 1 {
		t.Fatalf("%s{failed} = %d, want 1", MetricAcquires, n)
	}
}

// With no options, New reports to the global providers, also to ones
// installed after New was called (through the global's delegation): the
// spans and the acquire count arrive in an SDK set globally afterwards.
func TestDefaultProviders(t *testing.T) {
	obs := New()
	s := newSDK(t)
	otel.SetTracerProvider(s.tp)
	otel.SetMeterProvider(s.mp)
	t.Cleanup(func() {
		otel.SetTracerProvider(tracenoop.NewTracerProvider())
		otel.SetMeterProvider(metricnoop.NewMeterProvider())
	})
	ctx := obs.WithLockStart(context.Background(), "k")
	actx := obs.AcquireStart(ctx, dlock.AcquireEvent{Key: "k"})
	obs.AcquireEnd(actx, dlock.AcquireEvent{Key: "k", Outcome: dlock.OutcomeGranted})
	obs.Released(ctx, dlock.ReleaseEvent{Key: "k"})
	obs.Lost(dlock.ReleaseEvent{Key: "k"})
	obs.WithLockEnd(ctx, nil)
	for _, name := range []string{SpanAcquire, SpanWithLock} {
		if n := len(s.ended(name)); n != 1 {
			t.Errorf("the global tracer provider got %d %s spans, want 1", n, name)
		}
	}
	if n, _ := countOf(s.collect(t), MetricAcquires, AttrOutcome.String("granted")); n != 1 {
		t.Errorf("the global meter provider counted %s{granted} = %d, want 1", MetricAcquires, n)
	}
}

func TestErrorType(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("%w: %w: x", dlock.ErrNotAcquired, dlock.ErrLockLost), "lock_lost"},
		{fmt.Errorf("%w: %w", dlock.ErrNotAcquired, dlock.ErrDeadlock), "deadlock"},
		{fmt.Errorf("%w: %w", dlock.ErrNotAcquired, dlock.ErrReentrant), "reentrant"},
		{dlock.ErrNotAcquired, "not_acquired"},
		{errors.New("driver"), "_OTHER"},
	} {
		if got := errorType(tt.err); got != tt.want {
			t.Errorf("errorType(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
	if got := dbSystem("name").Value.AsString(); got != "mysql" {
		t.Errorf("dbSystem(a MySQL name) = %q, want mysql", got)
	}
}

func TestKeyText(t *testing.T) {
	long := strings.Repeat("é", 100)
	tests := []struct {
		key  any
		want string
	}{
		{"job", `"job"`},
		{[]byte{0xff, 'a'}, `"\xffa"`},
		{int64(-5), "-5"},
		{uint32(5), "5"},
		{strings.Repeat("a", 64), `"` + strings.Repeat("a", 64) + `"`},
		{long, `"` + strings.Repeat("é", 60) + `"... (100 characters)`},
	}
	for _, tt := range tests {
		if got := keyText(tt.key); got != tt.want {
			t.Errorf("keyText(%q) = %s, want %s", tt.key, got, tt.want)
		}
	}
}

// Recording allocates nothing beyond the span itself when the metrics
// carry no key: the attribute sets are made once.
func TestMetricsDoNotAllocate(t *testing.T) {
	s := newSDK(t)
	obs := s.observer()
	ctx := context.Background()
	e := dlock.ReleaseEvent{Key: "k", Held: time.Millisecond}
	obs.Released(ctx, e)
	if n := testing.AllocsPerRun(100, func() { obs.Released(ctx, e) }); n != 0 {
		t.Errorf("Released allocates %v times, want 0", n)
	}
}
