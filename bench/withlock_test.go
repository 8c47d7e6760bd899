package bench

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	"gorm.io/gorm"
)

// BenchmarkWithLockPaired alternates, cycle by cycle on the same pool,
// dlock.WithLock (fn empty) and the same work written by hand: a session
// from the pool with db.Conn(ctx), the try-lock statement, the unlock
// statement and conn.Close(). The hand-written cycle runs in two forms:
// "hand" with the caller's cancellable context, as a request handler
// would, which makes both drivers watch each statement's context; and
// "handquiet" with a context that cannot be cancelled, which they do not
// watch, as someone writing the cycle for speed would (dlock sends its
// statements that way too). It reports the median cycle of each series,
// the ratios of the medians, and the client CPU time per cycle of each
// series (process user+system time around each call), which the bimodal
// loopback round trip of a small machine does not move. A fourth series,
// "peer", is the Go peer on the same pool (go-mysql-lock, go-pglock) in
// the same wait mode as WithLock's default (wait until acquired).
func BenchmarkWithLockPaired(b *testing.B) {
	forEachServer(b, func(b *testing.B, s *server) {
		p := s.pool(b)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		k := newKey(lockName("withlock", "paired"))
		peer, err := newLocker(implPeer, on{p: p}, k, modeBlock)
		if err != nil {
			b.Fatal(err)
		}
		names := []string{"withlock", "hand", "handquiet", "peer"}
		series := []func() error{
			func() error { return dlock.WithLock(ctx, p.gdb, k.name, func(*gorm.DB) error { return nil }) },
			func() error { return handWritten(ctx, p, k) },
			func() error { return handWritten(context.Background(), p, k) },
			func() error {
				if _, err := peer.acquire(ctx); err != nil {
					return err
				}
				return peer.release(ctx)
			},
		}
		for _, f := range series { // warm the pool and dlock's session state
			if err := f(); err != nil {
				b.Fatal(err)
			}
		}
		times := make([][]time.Duration, len(series))
		cpu := make([]time.Duration, len(series))
		for b.Loop() {
			for j, f := range series {
				c0, t0 := cpuTime(), time.Now()
				if err := f(); err != nil {
					b.Fatal(err)
				}
				times[j] = append(times[j], time.Since(t0))
				cpu[j] += cpuTime() - c0
			}
		}
		med := make([]float64, len(series))
		for j, name := range names {
			slices.Sort(times[j])
			med[j] = float64(percentile(times[j], 50))
			b.ReportMetric(med[j], name+"-ns/cycle")
			b.ReportMetric(float64(cpu[j])/float64(len(times[j])), name+"-cpu-ns/cycle")
		}
		b.ReportMetric(med[0]/med[1], "withlock/hand")
		b.ReportMetric(med[0]/med[2], "withlock/handquiet")
		b.ReportMetric(med[0]/med[3], "withlock/peer")
		b.ReportMetric(float64(cpu[0])/float64(cpu[2]), "cpu-withlock/handquiet")
		b.ReportMetric(float64(cpu[0])/float64(cpu[3]), "cpu-withlock/peer")
	})
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkWithLockAllocs reports the allocations of one cycle of each
// series of BenchmarkWithLockPaired, run apart (allocations do not depend
// on the load, so they need no pairing).
func BenchmarkWithLockAllocs(b *testing.B) {
	forEachServer(b, func(b *testing.B, s *server) {
		p := s.pool(b)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		k := newKey(lockName("withlock", "allocs"))
		b.Run("series=withlock", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := dlock.WithLock(ctx, p.gdb, k.name, func(*gorm.DB) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("series=hand", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := handWritten(ctx, p, k); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("series=handquiet", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := handWritten(context.Background(), p, k); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// handWritten is the cycle of BenchmarkWithLockPaired's "hand" series.
func handWritten(ctx context.Context, p *pool, k key) error {
	conn, err := p.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	lock, unlock, arg := "SELECT GET_LOCK(?, 0)", "SELECT RELEASE_LOCK(?)", any(k.name)
	if p.srv.dialect != "mysql" {
		lock, unlock, arg = "SELECT pg_try_advisory_lock($1)", "SELECT pg_advisory_unlock($1)", k.pg
	}
	var got sql.NullBool
	if err := conn.QueryRowContext(ctx, lock, arg).Scan(&got); err != nil {
		return err
	}
	if !got.Bool {
		return errors.New("hand: busy")
	}
	return conn.QueryRowContext(ctx, unlock, arg).Scan(&got)
}
