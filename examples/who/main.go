// Command who shows dlock.Holders answering "who holds this lock, and who
// waits for it?" while two workers, each with its own connection pool as
// separate processes would have, contend for one lock.
//
// Worker "report-1" takes the lock and holds it for a moment; worker
// "report-2" waits for it. Meanwhile an operator's view (the same rows
// `dlock who` prints) is read with Holders from a third pool: one session
// holding, one waiting. Then report-1 releases, report-2 holds, and once
// both are done nobody is left.
//
// The workers' pools report to OpenTelemetry through the otel module
// (dlock.Plugin{Observer: dlockotel.New(...)}), into a ManualReader that
// the example reads at the end: how long each worker waited, by outcome,
// and how long each held the lock.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gormdlock/dlock"
	"github.com/gormdlock/dlock/examples/internal/exampledb"
	dlockotel "github.com/gormdlock/dlock/otel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"gorm.io/gorm"
)

const holdFor = 500 * time.Millisecond

func main() { exampledb.Main(run) }

func run(ctx context.Context, s *exampledb.Server) error {
	key := "dlock-example-who-" + strconv.Itoa(os.Getpid())
	operator, err := s.Open(ctx)
	if err != nil {
		return err
	}
	// The metrics of both workers, kept in memory until read.
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	observer := dlockotel.New(dlockotel.WithMeterProvider(mp))

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, name := range []string{"report-1", "report-2"} {
		db, err := s.OpenWith(ctx, dlock.Plugin{Observer: observer})
		if err != nil {
			return err
		}
		wg.Go(func() { errs[i] = work(ctx, s, db, key, name) })
		if i == 0 {
			// report-1 first, so that report-2 is the one waiting.
			if err := waitUntil(ctx, operator, key, 1, 0); err != nil {
				return err
			}
		}
	}
	if err := waitUntil(ctx, operator, key, 1, 1); err != nil {
		return err
	}
	show(ctx, s, operator, key, "while report-1 holds and report-2 waits")
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	show(ctx, s, operator, key, "after both are done")
	return showMetrics(ctx, s, reader)
}

// work takes the lock on a session of db, holds it for holdFor, releases.
func work(ctx context.Context, s *exampledb.Server, db *gorm.DB, key, name string) error {
	return dlock.WithLock(ctx, db, key, func(tx *gorm.DB) error {
		s.Printf("%s holds %s", name, key)
		time.Sleep(holdFor)
		s.Printf("%s releases %s", name, key)
		return nil
	}, dlock.Timeout(10*time.Second))
}

// waitUntil polls Holders until it shows granted holders and waiting
// waiters.
func waitUntil(ctx context.Context, db *gorm.DB, key string, granted, waiting int) error {
	for {
		hs, err := dlock.Holders(ctx, db, key)
		if err != nil {
			return err
		}
		g := 0
		for i := range hs {
			if hs[i].Granted {
				g++
			}
		}
		if g == granted && len(hs)-g == waiting {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("Holders(%s) = %d held, %d waiting; want %d, %d: %w", key, g, len(hs)-g, granted, waiting, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// show prints what Holders says of key.
func show(ctx context.Context, s *exampledb.Server, db *gorm.DB, key, when string) {
	hs, err := dlock.Holders(ctx, db, key)
	if err != nil {
		s.Printf("Holders: %v", err)
		return
	}
	s.Printf("Holders(%s) %s: %d rows", key, when, len(hs))
	for i := range hs {
		h := &hs[i]
		state := "waiting"
		if h.Granted {
			state = "held"
		}
		s.Printf("  session %d %s by %s from %s, %s since %s",
			h.SessionID, state, h.User, h.ClientAddr, h.State, h.Since.Format(time.TimeOnly))
	}
}

// showMetrics prints what the otel module recorded: each instrument's
// data points, with their attributes.
func showMetrics(ctx context.Context, s *exampledb.Server, reader *sdkmetric.ManualReader) error {
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		return err
	}
	s.Printf("metrics:")
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					s.Printf("  %s%s = %d", m.Name, labels(p.Attributes), p.Value)
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					s.Printf("  %s%s: %d, sum %.3f%s, max %.3f%s", m.Name, labels(p.Attributes),
						p.Count, p.Sum, m.Unit, maxOf(p.Max), m.Unit)
				}
			}
		}
	}
	return nil
}

// labels formats attributes as {k=v,...}, or nothing when there are none.
func labels(set attribute.Set) string {
	if set.Len() == 0 {
		return ""
	}
	var b strings.Builder
	for i, kv := range set.ToSlice() {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(string(kv.Key) + "=" + kv.Value.String())
	}
	return "{" + b.String() + "}"
}

// maxOf is a histogram's maximum, or 0 when it was not kept.
func maxOf(e metricdata.Extrema[float64]) float64 {
	v, _ := e.Value()
	return v
}
