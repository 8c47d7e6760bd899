package bench

import (
	"context"
	"database/sql"
	"encoding/hex"
	"slices"
	"testing"
	"time"
)

// waitingSQL counts the sessions waiting for one lock: on MariaDB and
// MySQL a GET_LOCK in the "User lock" state whose text names the lock
// (as a quoted string, or as the hex literal dlock sends); on PostgreSQL
// an advisory lock request not yet granted.
const (
	mysqlWaitingSQL = "SELECT COUNT(*) FROM information_schema.PROCESSLIST" +
		" WHERE STATE = 'User lock' AND (INFO LIKE ? OR INFO LIKE ?)"
	pgWaitingSQL = "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory'" +
		" AND NOT granted AND classid = $1 AND objid = $2 AND objsubid = 1"
)

// awaitWaiter polls the server from the observer until a session waits
// for k, so that the holder releases only once the waiter is queued. The
// polling is the benchmark's own; no library under test polls.
func awaitWaiter(s *server, obs *sql.DB, k key, done <-chan handoffResult) error {
	var query string
	var args []any
	if s.dialect == "mysql" {
		query = mysqlWaitingSQL
		args = []any{"%" + k.name + "%", "%" + hex.EncodeToString([]byte(k.name)) + "%"}
	} else {
		u := uint64(k.pg)
		query = pgWaitingSQL
		args = []any{int64(u >> 32), int64(u & 0xffffffff)}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var n int
		if err := obs.QueryRow(query, args...).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		if len(done) > 0 {
			return errNotWaiting
		}
		if time.Now().After(deadline) {
			return errNotWaiting
		}
		time.Sleep(100 * time.Microsecond)
	}
}

type benchError string

func (e benchError) Error() string { return string(e) }

const errNotWaiting = benchError("bench: the waiter never waited on the server")

type handoffResult struct {
	at  time.Time
	ok  bool
	err error
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted
// samples, by the nearest-rank method.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// BenchmarkHandoff measures how fast a released lock reaches a waiter:
// the time from the holder's release call returning to the waiter's
// acquire call returning, on two sessions. The waiter waits until
// acquired (mode=block) or at most 5 s (mode=timeout); the holder's
// release is sent only once the server shows the waiter queued. Each
// iteration is one hand-off; the benchmark reports the 50th, 90th and
// 99th percentile of the hand-off in ns (it may be negative: the server
// wakes the waiter before the holder has read the reply to its release).
func BenchmarkHandoff(b *testing.B) {
	forEachServer(b, func(b *testing.B, s *server) {
		p := s.pool(b)
		obs := s.observer(b)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		for _, m := range []string{modeBlock, modeTimeout} {
			for _, impl := range []string{implDlock, implRaw, implRawCtx, implPeer} {
				b.Run("mode="+m+"/impl="+impl, func(b *testing.B) {
					htx, hconn := p.session(b)
					wtx, wconn := p.session(b)
					name := lockName("h", m, impl)
					k := newKey(name)
					holder, err := newLocker(impl, on{p: p, tx: htx, conn: hconn}, k, modeBlock)
					if err != nil {
						b.Fatal(err)
					}
					waiter, err := newLocker(impl, on{p: p, tx: wtx, conn: wconn}, k, m)
					if err != nil {
						b.Fatal(err)
					}
					cycle(b, ctx, waiter) // the once-per-session work, outside the samples
					var samples []time.Duration
					for b.Loop() {
						if ok, err := holder.acquire(ctx); err != nil || !ok {
							b.Fatalf("holder acquire = %v, %v", ok, err)
						}
						done := make(chan handoffResult, 1)
						go func() {
							ok, err := waiter.acquire(ctx)
							done <- handoffResult{at: time.Now(), ok: ok, err: err}
						}()
						if err := awaitWaiter(s, obs, k, done); err != nil {
							b.Fatal(err)
						}
						if err := holder.release(ctx); err != nil {
							b.Fatalf("holder release: %v", err)
						}
						released := time.Now()
						r := <-done
						if r.err != nil || !r.ok {
							b.Fatalf("waiter acquire = %v, %v", r.ok, r.err)
						}
						samples = append(samples, r.at.Sub(released))
						if err := waiter.release(ctx); err != nil {
							b.Fatalf("waiter release: %v", err)
						}
					}
					slices.Sort(samples)
					b.ReportMetric(float64(percentile(samples, 50)), "p50-ns")
					b.ReportMetric(float64(percentile(samples, 90)), "p90-ns")
					b.ReportMetric(float64(percentile(samples, 99)), "p99-ns")
				})
			}
		}
	})
}
