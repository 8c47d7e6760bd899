package dlockotel_test

import (
	"context"
	"log"

	"github.com/gormdlock/dlock"
	dlockotel "github.com/gormdlock/dlock/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"gorm.io/gorm"
)

// exporter stands for the span exporter of your choice, such as
// otlptracegrpc.New(ctx) from
// go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc.
var exporter sdktrace.SpanExporter

// Export dlock's spans: dlock.with_lock is the parent of dlock.acquire and
// of the spans fn starts from tx.Statement.Context (the README shows this
// program's lines).
func Example_tracing() {
	ctx := context.Background()
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter))
	if err := db.Use(dlock.Plugin{Observer: dlockotel.New(dlockotel.WithTracerProvider(tp))}); err != nil {
		log.Fatal(err)
	}
	defer func() { _ = tp.Shutdown(context.Background()) }() // flushes the spans
	report := func(tx *gorm.DB) error {
		ctx, span := tp.Tracer("report").Start(tx.Statement.Context, "nightly-report")
		defer span.End()
		return tx.WithContext(ctx).Exec("SELECT 1").Error
	}
	if err := dlock.WithLock(ctx, db, "nightly-report", report); err != nil {
		log.Print(err)
	}
}
