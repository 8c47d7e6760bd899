package dlock

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"
)

func TestNewElectorErrors(t *testing.T) {
	db := openFake(t, "mysql", "8.0.36")
	if _, err := NewElector(db, "k"); !errors.Is(err, ErrNotRegistered) {
		t.Fatalf("NewElector() unregistered = %v, want ErrNotRegistered", err)
	}
	if err := db.Use(Plugin{}); err != nil {
		t.Fatalf("Use: %v", err)
	}
	tests := []struct {
		name string
		key  any
		opts []Option
		want error
	}{
		{"nil key", nil, nil, ErrInvalidKey},
		{"empty key", "", nil, ErrInvalidKey},
		{"float key", 1.5, nil, ErrInvalidKey},
		{"nil option", "k", []Option{nil}, ErrInvalidOption},
		{"shared", "k", []Option{Shared()}, ErrInvalidOption},
		{"xact", "k", []Option{Xact()}, ErrInvalidOption},
		{"nowait", "k", []Option{NoWait()}, ErrInvalidOption},
		{"timeout", "k", []Option{Timeout(time.Second)}, ErrInvalidOption},
		{"two identities", "k", []Option{Identity("a"), Identity("b")}, ErrInvalidOption},
		{"empty identity", "k", []Option{Identity("")}, ErrInvalidOption},
		{"long identity", "k", []Option{Identity(strings.Repeat("x", maxIdentity+1))}, ErrInvalidOption},
		{"non-ASCII identity", "k", []Option{Identity("hôte:1")}, ErrInvalidOption},
		{"control character", "k", []Option{Identity("a\nb")}, ErrInvalidOption},
		{"comment end", "k", []Option{Identity("a*/b")}, ErrInvalidOption},
		{"comment start", "k", []Option{Identity("a/*b")}, ErrInvalidOption},
		{"ok", "k", []Option{Identity(strings.Repeat("x", maxIdentity))}, nil},
		{"ok int key", 42, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := NewElector(db, tt.key, tt.opts...)
			if tt.want == nil {
				if err != nil || e == nil {
					t.Fatalf("NewElector() = %v, %v", e, err)
				}
				return
			}
			if !errors.Is(err, tt.want) || e != nil {
				t.Fatalf("NewElector() = %v, %v; want %v", e, err, tt.want)
			}
		})
	}
}

func TestIdentityOnlyForNewElector(t *testing.T) {
	db := openFake(t, "mysql", "8.0.36")
	if err := db.Use(Plugin{}); err != nil {
		t.Fatalf("Use: %v", err)
	}
	if _, err := New(db, "k", Identity("x")); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("New(Identity) = %v, want ErrInvalidOption", err)
	}
	err := WithLock(context.Background(), db, "k", func(*gorm.DB) error { return nil }, Identity("x"))
	if !errors.Is(err, ErrInvalidOption) {
		t.Errorf("WithLock(Identity) = %v, want ErrInvalidOption", err)
	}
	if _, err := (&Lock{}).Acquire(context.Background(), Identity("x")); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("Acquire(Identity) = %v, want ErrInvalidOption", err)
	}
}

func TestDefaultIdentity(t *testing.T) {
	id := defaultIdentity()
	if err := checkIdentity(id); err != nil {
		t.Fatalf("defaultIdentity() = %q: %v", id, err)
	}
	if !strings.HasSuffix(id, ":"+strconv.Itoa(os.Getpid())) {
		t.Fatalf("defaultIdentity() = %q, want host:%d", id, os.Getpid())
	}
}

// The identity and the grant's time go into the beacon's text and come
// back out of it, on every server; other statements are no beacon.
func TestBeaconText(t *testing.T) {
	granted := time.Date(2026, 12, 1, 20, 55, 31, 590_000_000, time.UTC)
	for _, be := range []backend{pgBackend{}, &mysqlBackend{}, &mysqlBackend{mariadb: true}} {
		for _, id := range []string{"web-7:1234 (eu-1)", "a since b", "x"} {
			e := &Elector{identity: id, reg: registration{server: &server{backend: be}}}
			stmt := e.beaconText(granted.In(time.FixedZone("CET", 3600)))
			gotID, gotAt, ok := parseBeacon(stmt)
			if !ok || gotID != id || !gotAt.Equal(granted) {
				t.Errorf("%T: parseBeacon(%q) = %q, %v, %v; want %q, %v", be, stmt, gotID, gotAt, ok, id, granted)
			}
		}
	}
	for _, stmt := range []string{
		"",
		"SELECT 1",
		"SELECT 1 /* dlock leader: x since 2026-12-01T20:55:31.590Z */",
		"DO SLEEP(0.5) /* dlock leader: x since 2026-12-01T20:55:31.590Z",
		"DO SLEEP(0.5) /* dlock leader: x since yesterday */",
		"DO SLEEP(0.5) /* dlock leader: x */",
		`SELECT GET_LOCK(_utf8mb4 X'6b', 31536000)`,
	} {
		if id, at, ok := parseBeacon(stmt); ok {
			t.Errorf("parseBeacon(%q) = %q, %v, true; want no beacon", stmt, id, at)
		}
	}
}

// The pause after failed campaigns doubles from campaignRetryMin up to
// campaignRetryMax, each drawn from the upper half of its step.
func TestBackoff(t *testing.T) {
	var b backoff
	step := campaignRetryMin
	for i := range 12 {
		d := b.delay()
		if d < step/2 || d > step {
			t.Fatalf("delay %d = %v, want within [%v, %v]", i, d, step/2, step)
		}
		step = min(2*step, campaignRetryMax)
	}
}

func TestRunArguments(t *testing.T) {
	db := openFake(t, "mysql", "8.0.36")
	if err := db.Use(Plugin{}); err != nil {
		t.Fatalf("Use: %v", err)
	}
	e, err := NewElector(db, "k")
	if err != nil {
		t.Fatalf("NewElector: %v", err)
	}
	if err := e.Run(context.Background(), nil); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("Run(nil) = %v, want ErrInvalidOption", err)
	}
	// The fake server cannot lock: the first Run campaigns and retries
	// until its ctx ends.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, func(context.Context) error { return nil }) }()
	deadline := time.Now().Add(time.Second)
	for !e.running.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if err := e.Run(context.Background(), func(context.Context) error { return nil }); !errors.Is(err, ErrAlreadyAcquired) {
		t.Errorf("a second Run = %v, want ErrAlreadyAcquired", err)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run() = %v, want context.Canceled", err)
		}
	case <-time.After(time.Second):
		t.Fatalf("Run did not return within 1 s of the cancel")
	}
	if e.IsLeader() {
		t.Fatalf("IsLeader() = true")
	}
}
