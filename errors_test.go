package dlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestKeyText(t *testing.T) {
	long := strings.Repeat("k", 10000)
	for _, tt := range []struct {
		key  any
		want string
	}{
		{"my-lock", `"my-lock"`},
		{[]byte{0xff, 0xfe, 'k'}, `"\xff\xfek"`},
		{int64(42), "42"},
		{"ключ", `"ключ"`},
		{long, `"` + strings.Repeat("k", maxKeyText-4) + `"... (10000 characters)`},
	} {
		if got := keyText(tt.key); got != tt.want {
			t.Errorf("keyText(%.20v) = %q, want %q", tt.key, got, tt.want)
		}
	}
}

// joinErrors matches every error it joins and reads as one line.
func TestJoinErrors(t *testing.T) {
	if err := joinErrors(nil, nil); err != nil {
		t.Fatalf("joinErrors(nil, nil) = %v, want nil", err)
	}
	one := errors.New("one")
	if err := joinErrors(nil, one); err != one { //nolint:errorlint // the error itself, not one that wraps it
		t.Fatalf("joinErrors(nil, one) = %v, want one itself", err)
	}
	multi := errors.Join(errors.New("first line"), errors.New("second line"))
	err := joinErrors(ErrLockLost, context.Canceled, multi)
	for _, want := range []error{ErrLockLost, context.Canceled, multi} {
		if !errors.Is(err, want) {
			t.Errorf("joinErrors(...) does not match %v", want)
		}
	}
	if got, want := err.Error(), "dlock: lock lost; context canceled; first line; second line"; got != want {
		t.Fatalf("joinErrors(...).Error() = %q, want %q", got, want)
	}
}

func TestOneLine(t *testing.T) {
	driver := errors.New("FATAL: terminating connection (SQLSTATE 57P01)")
	err := oneLine(fmt.Errorf("%w: %w", ErrNotAcquired, lostCause(driver)))
	want := "dlock: not acquired: lock lost: its session ended or its connection broke: FATAL: terminating connection (SQLSTATE 57P01)"
	if err.Error() != want {
		t.Errorf("oneLine() = %q, want %q", err, want)
	}
	for _, target := range []error{ErrNotAcquired, ErrLockLost, driver} {
		if !errors.Is(err, target) {
			t.Errorf("oneLine() does not match %v", target)
		}
	}
	if got := oneLine(ErrLockLost); got != ErrLockLost {
		t.Errorf("oneLine(ErrLockLost) = %#v, want it unchanged", got)
	}
}

func TestJoinErrorsSaysEachOnce(t *testing.T) {
	lost := fmt.Errorf("%w: its session ended", ErrLockLost)
	fnErr := fmt.Errorf("work: %w", lost)
	if got := joinErrors(fnErr, lost); got != fnErr {
		t.Errorf("joinErrors(fn's error wrapping the loss, the loss) = %v, want fn's error alone", got)
	}
	if got := joinErrors(lost, oneLine(lost)); got.Error() != lost.Error() {
		t.Errorf("joinErrors(the loss twice) = %q, want it once", got)
	}
	other := errors.New("dlock: something else")
	if got := joinErrors(lost, other); !errors.Is(got, other) || !errors.Is(got, lost) {
		t.Errorf("joinErrors(two errors) = %v, want both", got)
	}
}
