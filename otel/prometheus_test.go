package dlockotel_test

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	dlockotel "github.com/gormdlock/dlock/otel"
	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"gorm.io/gorm"
)

// db stands for a *gorm.DB opened with a MySQL or PostgreSQL driver.
var db *gorm.DB

// Serve dlock's metrics to Prometheus through the OpenTelemetry
// Prometheus exporter (the README shows this program's lines).
func Example_prometheus() {
	exporter, err := prometheus.New() // registers with prometheus.DefaultRegisterer
	if err != nil {
		log.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	if err := db.Use(dlock.Plugin{Observer: dlockotel.New(dlockotel.WithMeterProvider(mp))}); err != nil {
		log.Fatal(err)
	}
	http.Handle("/metrics", promhttp.Handler())
	log.Fatal(http.ListenAndServe(":9464", nil))
}

// The exporter shows the four instruments under the names the package
// documentation gives.
func TestPrometheusNames(t *testing.T) {
	reg := prom.NewRegistry()
	exporter, err := prometheus.New(prometheus.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	obs := dlockotel.New(dlockotel.WithMeterProvider(mp))
	ctx := obs.AcquireStart(context.Background(), dlock.AcquireEvent{Key: "k"})
	obs.AcquireEnd(ctx, dlock.AcquireEvent{Key: "k", Wait: time.Millisecond})
	obs.Released(ctx, dlock.ReleaseEvent{Key: "k", Held: time.Second})
	obs.Lost(dlock.ReleaseEvent{Key: "k"})

	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`dlock_acquire_duration_seconds_count{dlock_outcome="granted",`,
		`dlock_acquires_total{dlock_outcome="granted",`,
		`dlock_hold_duration_seconds_count{`,
		`dlock_lost_total{`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics has no %s:\n%s", want, body)
		}
	}
}
