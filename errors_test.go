package dlock

import (
	"context"
	"errors"
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
