package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkContentionPaired is BenchmarkContention's 4 and 16 sessions on
// one key, for dlock and for raw SQL sent with the caller's context, run
// in alternating blocks of 400 cycles on sessions pinned once: each
// iteration runs one block of each. It reports the median throughput of
// each series and the ratio of the medians (dlock/rawctx). Alternating
// blocks puts both series under the same background load, as
// BenchmarkPaired does for the uncontended cycle.
func BenchmarkContentionPaired(b *testing.B) {
	forEachServer(b, func(b *testing.B, s *server) {
		p := s.pool(b)
		p.db.SetMaxIdleConns(maxSessions)
		defer p.trim()
		for _, n := range []int{4, 16} {
			b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
				impls := []string{implDlock, implRawCtx}
				sets := make([][]worker, len(impls))
				for j, impl := range impls {
					k := newKey(lockName("cp", n, impl))
					sets[j] = workers(b, p, impl, n, func(int) key { return k })
				}
				defer func() {
					for _, ws := range sets {
						for _, w := range ws {
							w.done()
						}
					}
				}()
				const block = 400
				rates := make([][]float64, len(impls))
				for j := range impls { // warm up
					runBlock(b, sets[j], block)
				}
				for b.Loop() {
					for j := range impls {
						t0 := time.Now()
						runBlock(b, sets[j], block)
						rates[j] = append(rates[j], block/time.Since(t0).Seconds())
					}
				}
				med := make([]float64, len(impls))
				for j, impl := range impls {
					slices.Sort(rates[j])
					med[j] = rates[j][len(rates[j])/2]
					b.ReportMetric(med[j], impl+"-cycles/s")
				}
				b.ReportMetric(med[0]/med[1], "dlock/rawctx")
			})
		}
	})
}

// runBlock runs cycles acquire+release cycles shared among the workers,
// each on its own goroutine.
func runBlock(b *testing.B, ws []worker, cycles int64) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= cycles {
				ok, err := w.l.acquire(ctx)
				if err == nil && !ok {
					err = errors.New("not acquired")
				}
				if err == nil {
					err = w.l.release(ctx)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					next.Store(cycles)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
}
