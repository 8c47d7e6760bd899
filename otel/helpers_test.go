package dlockotel

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// sdk is an OpenTelemetry SDK that keeps everything in memory: ended
// spans in a SpanRecorder, metrics in a ManualReader.
type sdk struct {
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	tp     *sdktrace.TracerProvider
	mp     *sdkmetric.MeterProvider
}

func newSDK(t testing.TB) *sdk {
	t.Helper()
	s := &sdk{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	s.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(s.spans))
	s.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(s.reader))
	t.Cleanup(func() {
		_ = s.tp.Shutdown(context.Background())
		_ = s.mp.Shutdown(context.Background())
	})
	return s
}

// observer returns an Observer reporting to s.
func (s *sdk) observer(opts ...Option) dlock.Observer {
	return New(append([]Option{WithTracerProvider(s.tp), WithMeterProvider(s.mp)}, opts...)...)
}

// ended returns the ended spans named name, in the order they ended.
func (s *sdk) ended(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, sp := range s.spans.Ended() {
		if sp.Name() == name {
			out = append(out, sp)
		}
	}
	return out
}

// oneSpan returns the only ended span named name.
func (s *sdk) oneSpan(t testing.TB, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	spans := s.ended(name)
	if len(spans) != 1 {
		t.Fatalf("ended %q spans = %d, want 1", name, len(spans))
	}
	return spans[0]
}

// collect reads the metrics recorded so far.
func (s *sdk) collect(t testing.TB) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := s.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("Collect: %v", err)
	}
	return rm
}

// metricOf finds the metric named name.
func metricOf(rm metricdata.ResourceMetrics, name string) (metricdata.Metrics, bool) {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

// series is one data point of a counter or histogram: its attributes,
// its count (the sum of a counter, the count of a histogram) and, for a
// histogram, the sum of its values.
type series struct {
	attrs attribute.Set
	count uint64
	sum   float64
}

// seriesOf returns the data points of the metric named name.
func seriesOf(rm metricdata.ResourceMetrics, name string) []series {
	m, ok := metricOf(rm, name)
	if !ok {
		return nil
	}
	var out []series
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			out = append(out, series{attrs: p.Attributes, count: uint64(p.Value), sum: float64(p.Value)})
		}
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			out = append(out, series{attrs: p.Attributes, count: p.Count, sum: p.Sum})
		}
	}
	return out
}

// countOf is the count of the metric's data point whose attributes are
// exactly attrs (0 when there is none).
func countOf(rm metricdata.ResourceMetrics, name string, attrs ...attribute.KeyValue) (uint64, float64) {
	want := attribute.NewSet(attrs...)
	for _, s := range seriesOf(rm, name) {
		if s.attrs.Equals(&want) {
			return s.count, s.sum
		}
	}
	return 0, 0
}

// attr returns the span's attribute k.
func attr(sp sdktrace.ReadOnlySpan, k attribute.Key) (attribute.Value, bool) {
	for _, kv := range sp.Attributes() {
		if kv.Key == k {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// wantAttr fails unless the span's attribute k is want.
func wantAttr(t testing.TB, sp sdktrace.ReadOnlySpan, k attribute.Key, want any) {
	t.Helper()
	got, ok := attr(sp, k)
	if !ok {
		t.Fatalf("span %s has no %s; has %v", sp.Name(), k, sp.Attributes())
	}
	if got.AsInterface() != want {
		t.Fatalf("span %s: %s = %#v, want %#v", sp.Name(), k, got.AsInterface(), want)
	}
}

// isParent reports whether parent is sp's parent span.
func isParent(parent, sp sdktrace.ReadOnlySpan) bool {
	return sp.Parent().SpanID() == parent.SpanContext().SpanID() &&
		sp.SpanContext().TraceID() == parent.SpanContext().TraceID()
}

// Databases, found as the integration tests in tests/ find them: the DSN
// in the environment, else the local default.
const (
	envMySQL           = "DLOCK_TEST_MYSQL_DSN"
	envPostgres        = "DLOCK_TEST_POSTGRES_DSN"
	defaultMySQLDSN    = "root@tcp(127.0.0.1:3306)/test?interpolateParams=true"
	defaultPostgresDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
)

// server is one database the tests run against.
type server struct {
	name, dialect, dsn string
}

var (
	serversOnce sync.Once
	servers     = []server{
		{"mysql", "mysql", envOr(envMySQL, defaultMySQLDSN)},
		{"postgres", "postgres", envOr(envPostgres, defaultPostgresDSN)},
	}
	serverErrs = make([]error, 2)
)

// eachServer runs fn as a subtest per database: "mysql" (MariaDB or
// MySQL) and "postgres". An unreachable one is skipped, or fails when CI
// or DLOCK_TEST_REQUIRE_DB is set.
func eachServer(t *testing.T, fn func(t *testing.T, s server)) {
	t.Helper()
	serversOnce.Do(func() {
		for i, s := range servers {
			db, err := open(s, dlock.Plugin{})
			if err == nil {
				closeDB(db)
			}
			serverErrs[i] = err
		}
	})
	for i, s := range servers {
		t.Run(s.name, func(t *testing.T) {
			if err := serverErrs[i]; err != nil {
				if required() {
					t.Fatalf("%s unreachable: %v", s.name, err)
				}
				t.Skipf("%s unreachable (set %s or %s): %v", s.name, envMySQL, envPostgres, err)
			}
			fn(t, s)
		})
	}
}

// required reports whether CI or DLOCK_TEST_REQUIRE_DB asks for the
// databases ("", "0", "false" and "no" do not).
func required() bool {
	for _, v := range []string{"CI", "DLOCK_TEST_REQUIRE_DB"} {
		switch strings.ToLower(strings.TrimSpace(os.Getenv(v))) {
		case "", "0", "false", "no":
		default:
			return true
		}
	}
	return false
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// open opens a pool to s with p registered.
func open(s server, p dlock.Plugin) (*gorm.DB, error) {
	dialector := postgres.Open(s.dsn)
	if s.dialect == "mysql" {
		dialector = mysql.Open(s.dsn)
	}
	db, err := gorm.Open(dialector, &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := db.WithContext(ctx).Use(p); err != nil {
		closeDB(db)
		return nil, err
	}
	return db, nil
}

func closeDB(db *gorm.DB) {
	if sqlDB, err := db.DB(); err == nil {
		_ = sqlDB.Close()
	}
}

// openDB opens a pool to s with dlock reporting to obs (nil: no
// observer), closed when the test ends.
func openDB(t testing.TB, s server, obs dlock.Observer) *gorm.DB {
	t.Helper()
	db, err := open(s, dlock.Plugin{Observer: obs})
	if err != nil {
		t.Fatalf("open(%s): %v", s.name, err)
	}
	t.Cleanup(func() { closeDB(db) })
	return db
}

// uniqueKey returns a lock name no other test uses.
func uniqueKey(t testing.TB) string {
	t.Helper()
	var r [6]byte
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatalf("crypto/rand: %v", err)
	}
	return strings.ToLower("otel-" + strings.ReplaceAll(t.Name(), "/", ".") + "-" + hex.EncodeToString(r[:]))
}

// sessionIDQuery asks for the session's id as dlock reports it.
func sessionIDQuery(s server) string {
	if s.dialect == "postgres" {
		return "SELECT pg_backend_pid()"
	}
	return "SELECT CONNECTION_ID()"
}

// pinnedLock pins a session of db and makes a Lock on key there. It
// returns the lock and the session's id; the lock is closed and the
// session given back when the test ends.
func pinnedLock(t testing.TB, s server, db *gorm.DB, key string) (*dlock.Lock, int64) {
	t.Helper()
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatalf("db.DB(): %v", err)
	}
	conn, err := sqlDB.Conn(context.Background())
	if err != nil {
		t.Fatalf("Conn: %v", err)
	}
	var id int64
	if err := conn.QueryRowContext(context.Background(), sessionIDQuery(s)).Scan(&id); err != nil {
		t.Fatalf("%s: %v", sessionIDQuery(s), err)
	}
	tx := db.WithContext(context.Background())
	tx.Statement.ConnPool = conn
	l, err := dlock.New(tx, key)
	if err != nil {
		t.Fatalf("New(%q): %v", key, err)
	}
	t.Cleanup(func() {
		_ = l.Close(context.Background())
		_ = conn.Close()
	})
	return l, id
}

// kill ends the session id from a connection of db: KILL on MySQL and
// MariaDB, pg_terminate_backend on PostgreSQL.
func kill(t testing.TB, s server, db *gorm.DB, id int64) {
	t.Helper()
	var err error
	if s.dialect == "postgres" {
		err = db.Exec("SELECT pg_terminate_backend(?)", id).Error
	} else {
		err = db.Exec("KILL ?", id).Error
	}
	if err != nil {
		t.Fatalf("kill session %d: %v", id, err)
	}
}

// eventually polls cond every 20 ms until it holds, for up to 5 s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
