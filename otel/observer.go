package dlockotel

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/gormdlock/dlock"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of the tracer and the meter.
const ScopeName = "github.com/gormdlock/dlock/otel"

// Names of the spans, instruments and attributes; see the package
// documentation for what each holds.
const (
	SpanAcquire  = "dlock.acquire"
	SpanWithLock = "dlock.with_lock"
	EventRelease = "dlock.release"

	MetricAcquireDuration = "dlock.acquire.duration"
	MetricAcquires        = "dlock.acquires"
	MetricHoldDuration    = "dlock.hold.duration"
	MetricLost            = "dlock.lost"

	AttrKey       = attribute.Key("dlock.key")
	AttrDBKey     = attribute.Key("dlock.db_key")
	AttrMode      = attribute.Key("dlock.mode")
	AttrSessionID = attribute.Key("dlock.session.id")
	AttrOutcome   = attribute.Key("dlock.outcome")
	AttrHeld      = attribute.Key("dlock.hold.duration")

	// OpenTelemetry's own attributes: the kind of failure of a failed
	// acquire, WithLock or release ("lock_lost", "deadlock", "reentrant",
	// "unsupported_dialect", "not_acquired" or "_OTHER"), and the database
	// ("postgresql"; "mysql" for MySQL and MariaDB, GORM's one dialect).
	AttrErrorType    = attribute.Key("error.type")
	AttrDBSystemName = attribute.Key("db.system.name")
)

// MetricAcquireWait is the old name of MetricAcquireDuration.
//
// Deprecated: use MetricAcquireDuration; the instrument is now named
// dlock.acquire.duration, as OpenTelemetry names durations.
const MetricAcquireWait = MetricAcquireDuration

// Bucket bounds in seconds: waits from a millisecond (a free lock) to
// ten minutes, holds up to an hour.
var (
	waitBuckets = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600}
	holdBuckets = []float64{0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600, 1800, 3600}
)

// Option configures New.
type Option func(*config)

type config struct {
	tp      trace.TracerProvider
	mp      metric.MeterProvider
	keyAttr bool
}

// WithTracerProvider sets where the spans go. Default: the global
// provider, otel.GetTracerProvider(), as it is when New is called (a
// provider set globally later is still used, through the global's
// delegation).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// WithMeterProvider sets where the metrics go. Default: the global
// provider, otel.GetMeterProvider(), as for WithTracerProvider.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.mp = mp }
}

// WithKeyAttribute adds the dlock.key attribute to every metric, so that
// waits, holds and losses can be told apart by lock. Each distinct key
// is then a time series of its own in each of the four instruments: use
// it only when the keys are few and fixed (job names), never with keys
// made from ids, users or tenants. Default: off, metrics carry only
// dlock.outcome.
func WithKeyAttribute() Option {
	return func(c *config) { c.keyAttr = true }
}

// New returns a dlock.Observer that reports to OpenTelemetry, for
// dlock.Plugin.Observer. An instrument the meter cannot create is
// reported to otel.Handle and left out; New never fails.
func New(opts ...Option) dlock.Observer {
	var c config
	for _, opt := range opts {
		if opt != nil {
			opt(&c)
		}
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	meter := c.mp.Meter(ScopeName)
	o := &observer{
		tracer:  c.tp.Tracer(ScopeName),
		keyAttr: c.keyAttr,
	}
	var err error
	if o.wait, err = meter.Float64Histogram(MetricAcquireDuration,
		metric.WithDescription("How long each dlock acquire took, from the call to its return, by outcome."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(waitBuckets...)); err != nil {
		otel.Handle(err)
		o.wait = noop.Float64Histogram{}
	}
	if o.hold, err = meter.Float64Histogram(MetricHoldDuration,
		metric.WithDescription("How long each dlock lock was held, from its grant to its release or loss."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(holdBuckets...)); err != nil {
		otel.Handle(err)
		o.hold = noop.Float64Histogram{}
	}
	if o.acquires, err = meter.Int64Counter(MetricAcquires,
		metric.WithDescription("dlock acquires, by outcome: granted, busy, timed_out, canceled, failed."),
		metric.WithUnit("{acquire}")); err != nil {
		otel.Handle(err)
		o.acquires = noop.Int64Counter{}
	}
	if o.lost, err = meter.Int64Counter(MetricLost,
		metric.WithDescription("dlock locks found lost while held: the session ended or the lock was dropped."),
		metric.WithUnit("{lock}")); err != nil {
		otel.Handle(err)
		o.lost = noop.Int64Counter{}
	}
	for i := range o.byOutcome {
		o.byOutcome[i] = metric.WithAttributeSet(attribute.NewSet(AttrOutcome.String(dlock.Outcome(i).String())))
	}
	return o
}

// observer is the dlock.Observer New returns.
type observer struct {
	tracer   trace.Tracer
	wait     metric.Float64Histogram
	hold     metric.Float64Histogram
	acquires metric.Int64Counter
	lost     metric.Int64Counter
	keyAttr  bool
	// byOutcome holds the attribute set of each outcome, made once, so
	// that recording allocates nothing without WithKeyAttribute.
	byOutcome [dlock.OutcomeFailed + 1]metric.MeasurementOption
}

// Context keys for the spans this observer started, so that an End
// never ends a span it did not start (a caller's, or an outer one).
type (
	acquireSpanKey  struct{}
	withLockSpanKey struct{}
)

func (o *observer) AcquireStart(ctx context.Context, e dlock.AcquireEvent) context.Context {
	attrs := []attribute.KeyValue{
		AttrKey.String(keyText(e.Key)),
		dbKeyAttr(e.DBKey),
		AttrMode.String(e.Mode),
		dbSystem(e.DBKey),
	}
	if e.SessionID != 0 {
		attrs = append(attrs, AttrSessionID.Int64(e.SessionID))
	}
	ctx, span := o.tracer.Start(ctx, SpanAcquire,
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	return context.WithValue(ctx, acquireSpanKey{}, span)
}

func (o *observer) AcquireEnd(ctx context.Context, e dlock.AcquireEvent) {
	outcome := e.Outcome
	if outcome > dlock.OutcomeFailed {
		outcome = dlock.OutcomeFailed
	}
	if span, ok := ctx.Value(acquireSpanKey{}).(trace.Span); ok {
		if span.IsRecording() {
			span.SetAttributes(AttrOutcome.String(outcome.String()))
			if e.SessionID != 0 {
				span.SetAttributes(AttrSessionID.Int64(e.SessionID))
			}
			if outcome == dlock.OutcomeFailed && e.Err != nil {
				span.RecordError(e.Err)
				span.SetAttributes(AttrErrorType.String(errorType(e.Err)))
				span.SetStatus(codes.Error, e.Err.Error())
			} else if outcome == dlock.OutcomeFailed {
				span.SetStatus(codes.Error, "failed")
			}
		}
		span.End()
	}
	attrs := o.byOutcome[outcome]
	if o.keyAttr {
		attrs = metric.WithAttributes(AttrOutcome.String(outcome.String()), AttrKey.String(keyText(e.Key)))
	}
	o.wait.Record(ctx, e.Wait.Seconds(), attrs)
	o.acquires.Add(ctx, 1, attrs)
}

func (o *observer) Released(ctx context.Context, e dlock.ReleaseEvent) {
	if o.keyAttr {
		o.hold.Record(ctx, e.Held.Seconds(), o.keyOption(e.Key))
	} else {
		o.hold.Record(ctx, e.Held.Seconds())
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		attrs := []attribute.KeyValue{
			AttrKey.String(keyText(e.Key)),
			AttrHeld.Float64(e.Held.Seconds()),
		}
		if e.Err != nil {
			attrs = append(attrs, AttrErrorType.String(errorType(e.Err)), attribute.String("error.message", e.Err.Error()))
		}
		span.AddEvent(EventRelease, trace.WithAttributes(attrs...))
	}
}

func (o *observer) Lost(e dlock.ReleaseEvent) {
	ctx := context.Background()
	opt := o.keyOption(e.Key)
	o.lost.Add(ctx, 1, opt)
	o.hold.Record(ctx, e.Held.Seconds(), opt)
}

func (o *observer) WithLockStart(ctx context.Context, key any) context.Context {
	ctx, span := o.tracer.Start(ctx, SpanWithLock,
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(AttrKey.String(keyText(key))))
	return context.WithValue(ctx, withLockSpanKey{}, span)
}

func (o *observer) WithLockEnd(ctx context.Context, err error) {
	span, ok := ctx.Value(withLockSpanKey{}).(trace.Span)
	if !ok {
		return
	}
	if err != nil && span.IsRecording() {
		span.RecordError(err)
		span.SetAttributes(AttrErrorType.String(errorType(err)))
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// keyOption is the measurement option of the metrics without an outcome:
// none, or dlock.key with WithKeyAttribute.
func (o *observer) keyOption(key any) metric.MeasurementOption {
	if !o.keyAttr {
		return noAttrs
	}
	return metric.WithAttributes(AttrKey.String(keyText(key)))
}

// noAttrs is the measurement option of no attributes.
var noAttrs = metric.WithAttributeSet(*attribute.EmptySet())

// errorType is error.type for err: the most telling dlock sentinel it
// matches, in a low-cardinality form.
func errorType(err error) string {
	for _, c := range []struct {
		err  error
		name string
	}{
		{dlock.ErrLockLost, "lock_lost"},
		{dlock.ErrDeadlock, "deadlock"},
		{dlock.ErrReentrant, "reentrant"},
		{dlock.ErrUnsupportedDialect, "unsupported_dialect"},
		{dlock.ErrNotAcquired, "not_acquired"},
	} {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	return "_OTHER"
}

// dbSystem is db.system.name, from what the server sees of the key: an
// int64 on PostgreSQL, a name on MySQL and MariaDB.
func dbSystem(dbKey any) attribute.KeyValue {
	if _, pg := dbKey.(int64); pg {
		return AttrDBSystemName.String("postgresql")
	}
	return AttrDBSystemName.String("mysql")
}

// dbKeyAttr is dlock.db_key: an int64 for PostgreSQL, the name for MySQL.
func dbKeyAttr(k any) attribute.KeyValue {
	switch k := k.(type) {
	case int64:
		return AttrDBKey.Int64(k)
	case string:
		return AttrDBKey.String(k)
	}
	return AttrDBKey.String(fmt.Sprint(k))
}

// maxKeyText is how many characters of a key an attribute shows, as in
// dlock's error messages.
const maxKeyText = 64

// keyText formats a key as dlock's errors do: strings and []byte quoted
// (binary bytes stay readable), integers in decimal, and a key longer
// than maxKeyText characters cut, with its full length noted.
func keyText(key any) string {
	var s string
	switch k := key.(type) {
	case string:
		s = k
	case []byte:
		s = string(k)
	default:
		return fmt.Sprint(key)
	}
	n := utf8.RuneCountInString(s)
	if n <= maxKeyText {
		return strconv.Quote(s)
	}
	cut, runes := s, 0
	for i := range s {
		if runes == maxKeyText-4 {
			cut = s[:i]
			break
		}
		runes++
	}
	return strconv.Quote(cut) + "... (" + strconv.Itoa(n) + " characters)"
}
