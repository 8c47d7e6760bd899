package dlock

import (
	"database/sql/driver"
	"testing"
)

// TestRowValues checks how queryRow's values are owned and read.
func TestRowValues(t *testing.T) {
	for _, tt := range []struct {
		in   driver.Value
		want driver.Value
	}{
		{[]byte("1"), int64(1)},
		{[]byte("-42"), int64(-42)},
		{[]byte("123456789012345678"), int64(123456789012345678)},
		{[]byte("1234567890123456789"), "1234567890123456789"},
		{[]byte(""), ""},
		{[]byte("-"), "-"},
		{[]byte("1a"), "1a"},
		{[]byte("t"), "t"},
		{int64(7), int64(7)},
		{true, true},
		{nil, nil},
	} {
		if got := ownValue(tt.in); got != tt.want {
			t.Errorf("ownValue(%#v) = %#v, want %#v", tt.in, got, tt.want)
		}
	}
	if n, ok, err := valueInt(nil); n != 0 || ok || err != nil {
		t.Errorf("valueInt(nil) = %v %v %v", n, ok, err)
	}
	if n, ok, err := valueInt(int64(1)); n != 1 || !ok || err != nil {
		t.Errorf("valueInt(1) = %v %v %v", n, ok, err)
	}
	if _, _, err := valueInt(3.5); err == nil {
		t.Error("valueInt(3.5): no error")
	}
}
