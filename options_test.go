package dlock

import (
	"errors"
	"testing"
	"time"
)

func TestApplyOptions(t *testing.T) {
	tests := []struct {
		name                 string
		mode, wait           bool
		opts                 []Option
		wantErr              bool
		wantWait             waitMode
		wantTimeout          time.Duration
		wantShared, wantXact bool
	}{
		{name: "none", mode: true, wait: true},
		{name: "nil", mode: true, wait: true, opts: []Option{nil}, wantErr: true},
		{name: "shared+xact", mode: true, wait: true, opts: []Option{Shared(), Xact()}, wantShared: true, wantXact: true},
		{name: "mode misplaced", wait: true, opts: []Option{Shared()}, wantErr: true},
		{name: "xact misplaced", wait: true, opts: []Option{Xact()}, wantErr: true},
		{name: "wait misplaced", mode: true, opts: []Option{NoWait()}, wantErr: true},
		{name: "nowait", wait: true, opts: []Option{NoWait()}, wantWait: waitNone},
		{name: "timeout", wait: true, opts: []Option{Timeout(time.Second)}, wantWait: waitTimeout, wantTimeout: time.Second},
		{name: "timeout zero", wait: true, opts: []Option{Timeout(0)}, wantWait: waitNone},
		{name: "timeout negative", wait: true, opts: []Option{Timeout(-time.Second)}, wantWait: waitNone},
		{name: "conflict", wait: true, opts: []Option{NoWait(), Timeout(time.Second)}, wantErr: true},
		{name: "two timeouts", wait: true, opts: []Option{Timeout(time.Second), Timeout(time.Minute)}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := applyOptions("test", tt.mode, tt.wait, tt.opts)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidOption) {
					t.Fatalf("applyOptions() = %v, want ErrInvalidOption", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("applyOptions() = %v", err)
			}
			if o.wait != tt.wantWait || o.timeout != tt.wantTimeout || o.shared != tt.wantShared || o.xact != tt.wantXact {
				t.Fatalf("applyOptions() = %+v", o)
			}
		})
	}
}
