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

// BenchmarkWithLockPaired compares dlock.WithLock (fn empty) on the pool
// with the same work written by hand and with the Go peer, two series at
// a time: each sub-benchmark alternates its two series cycle by cycle on
// the same pool, so that each always follows the other (a cycle pays for
// what the cycle before it left running: go-mysql-lock's goroutines, a
// driver's context watcher; with more series in rotation each would
// follow a different one). The series:
//
//   - withlock: dlock.WithLock.
//   - hand: a session from the pool with db.Conn(ctx), the try-lock
//     statement, the unlock statement and conn.Close(), with the caller's
//     cancellable context, as a request handler would, which makes both
//     drivers watch each statement's context.
//   - handquiet: the same with a context that cannot be cancelled, which
//     the drivers do not watch, as someone writing the cycle for speed
//     would (dlock sends its statements that way too).
//   - peer: the Go peer on the same pool (go-mysql-lock, go-pglock) in
//     WithLock's default wait mode (wait until acquired).
//   - gorm: GORM's own db.Connection around the handquiet statements, the
//     least a GORM plugin that pins a session per call can cost.
//
// Each pair reports the median cycle of its two series, the ratio of the
// medians (a/b), and the ratio of their client CPU time per cycle
// (cpu-a/b: process user+system time around each call, which the bimodal
// loopback round trip of a small machine moves less). The pairs
// gorm-handquiet and handquiet-peer say where the floor under WithLock's
// targets lies on the machine.
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
		series := map[string]func() error{
			"withlock":  func() error { return dlock.WithLock(ctx, p.gdb, k.name, func(*gorm.DB) error { return nil }) },
			"hand":      func() error { return handWritten(ctx, p, k) },
			"handquiet": func() error { return handWritten(context.Background(), p, k) },
			"peer": func() error {
				if _, err := peer.acquire(ctx); err != nil {
					return err
				}
				return peer.release(ctx)
			},
			"gorm": func() error {
				return p.gdb.WithContext(ctx).Connection(func(tx *gorm.DB) error {
					return handStatements(context.Background(), tx.Statement.ConnPool.(*sql.Conn), p, k)
				})
			},
		}
		for _, f := range series { // warm the pool and dlock's session state
			if err := f(); err != nil {
				b.Fatal(err)
			}
		}
		for _, pair := range withLockPairs {
			b.Run("pair="+pair[0]+"-"+pair[1], func(b *testing.B) {
				fs := [2]func() error{series[pair[0]], series[pair[1]]}
				var times [2][]time.Duration
				var cpu [2]time.Duration
				for b.Loop() {
					for j, f := range fs {
						c0, t0 := cpuTime(), time.Now()
						if err := f(); err != nil {
							b.Fatal(err)
						}
						times[j] = append(times[j], time.Since(t0))
						cpu[j] += cpuTime() - c0
					}
				}
				var med [2]float64
				for j, name := range pair {
					slices.Sort(times[j])
					med[j] = float64(percentile(times[j], 50))
					b.ReportMetric(med[j], name+"-ns/cycle")
					b.ReportMetric(float64(cpu[j])/float64(len(times[j])), name+"-cpu-ns/cycle")
				}
				b.ReportMetric(med[0]/med[1], pair[0]+"/"+pair[1])
				b.ReportMetric(float64(cpu[0])/float64(cpu[1]), "cpu-"+pair[0]+"/"+pair[1])
			})
		}
	})
}

// withLockPairs are the pairs of series BenchmarkWithLockPaired
// alternates: WithLock against each other series, then the floor.
var withLockPairs = [][2]string{
	{"withlock", "handquiet"},
	{"withlock", "hand"},
	{"withlock", "peer"},
	{"withlock", "gorm"},
	{"gorm", "handquiet"},
	{"handquiet", "peer"},
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
		b.Run("series=gorm", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				err := p.gdb.WithContext(ctx).Connection(func(tx *gorm.DB) error {
					return handStatements(context.Background(), tx.Statement.ConnPool.(*sql.Conn), p, k)
				})
				if err != nil {
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
	return handStatements(ctx, conn, p, k)
}

// handStatements is the try and the unlock of handWritten on conn.
func handStatements(ctx context.Context, conn *sql.Conn, p *pool, k key) error {
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
