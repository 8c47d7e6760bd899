package bench

import (
	"context"
	"runtime"
	"testing"

	"github.com/gormdlock/dlock"
)

// heldMemoryLocks is how many locks BenchmarkHeldMemory holds at once.
const heldMemoryLocks = 10000

// BenchmarkHeldMemory is the heap one process keeps per held lock: with
// 10,000 locks held at once through dlock on one session, the live heap
// after a GC less the live heap before the Locks were made, per lock
// (B/hold): the Lock, the session's record of the hold, the loss
// monitor's entry and the statements' text (MySQL), not the key the
// caller passes, which it already had.
func BenchmarkHeldMemory(b *testing.B) {
	forEachServer(b, func(b *testing.B, s *server) {
		p := s.pool(b)
		tx, _ := p.session(b)
		ctx := context.Background()
		names := make([]string, heldMemoryLocks)
		for i := range names {
			names[i] = lockName("mem", i)
		}
		var perHold float64
		for b.Loop() {
			ls := make([]*dlock.Lock, heldMemoryLocks)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for i := range ls {
				l, err := dlock.New(tx, names[i])
				if err != nil {
					b.Fatal(err)
				}
				if ok, err := l.Acquire(ctx); !ok || err != nil {
					b.Fatalf("Acquire = %v, %v", ok, err)
				}
				ls[i] = l
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			perHold = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / heldMemoryLocks
			for _, l := range ls {
				if err := l.Close(ctx); err != nil {
					b.Fatalf("Close: %v", err)
				}
			}
		}
		b.ReportMetric(perHold, "B/hold")
	})
}
