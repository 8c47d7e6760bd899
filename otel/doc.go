// Package dlockotel reports what dlock does to OpenTelemetry: a span per
// Acquire and per WithLock, and metrics of waits, holds, acquire outcomes
// and losses. Register it as dlock's Observer:
//
//	err := db.Use(dlock.Plugin{Observer: dlockotel.New()})
//
// # Spans
//
// "dlock.with_lock" (kind internal) spans a WithLock call: the wait for a
// pooled session, the acquire, fn and the release. It is the parent of
// its "dlock.acquire" span and of every span fn starts from
// tx.Statement.Context. Its status is Error when WithLock returns an
// error (busy, timed out, lost, or fn's own).
//
// "dlock.acquire" (kind client) spans one Acquire, or the acquire of a
// WithLock. Its status is Error only for [dlock.OutcomeFailed]; a busy
// lock, a Timeout that ran out and a cancelled wait are outcomes, not
// failures, and are told apart by the dlock.outcome attribute.
//
// Span attributes:
//
//	dlock.key         the key as dlock's errors show it: strings and []byte
//	                  quoted, integers in decimal, cut to 64 characters
//	dlock.db_key      what the server sees: the PostgreSQL int64 or the MySQL name
//	dlock.mode        "exclusive" or "shared", with " xact" for Xact
//	dlock.session.id  the server's session id (pg_backend_pid, CONNECTION_ID), once known
//	dlock.outcome     "granted", "busy", "timed_out", "canceled" or "failed"
//	db.system.name    "postgresql", or "mysql" for MySQL and MariaDB
//	error.type        on a failure: "lock_lost", "deadlock", "reentrant",
//	                  "unsupported_dialect", "not_acquired" or "_OTHER"
//
// A release is an event "dlock.release" on the span of the context the
// release ran with (in WithLock, the dlock.with_lock span), with the hold
// time and the release's error.
//
// # Metrics
//
//	dlock.acquire.duration  histogram, s        how long each acquire took, by dlock.outcome
//	dlock.acquires          counter, {acquire}  acquires, by dlock.outcome
//	dlock.hold.duration     histogram, s        how long each hold lasted, to its release or loss
//	dlock.lost              counter, {lock}     holds found lost (the session killed, the lock dropped)
//
// The histograms' buckets run from 1 ms to an hour. Metrics carry no key,
// so that their cardinality stays that of the outcomes; [WithKeyAttribute]
// adds dlock.key to all four. Through the OpenTelemetry Prometheus
// exporter they appear as dlock_acquire_duration_seconds,
// dlock_acquires_total, dlock_hold_duration_seconds and dlock_lost_total.
//
// Every method of the Observer returns at once: it starts or ends a span
// and records into the SDK's in-memory aggregations; exporting happens
// elsewhere, on the SDK's own schedule.
package dlockotel
