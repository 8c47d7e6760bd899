package dlock

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestFnCtx checks that fnCtx behaves as the contexts it replaces,
// context.WithCancelCause over context.WithValue(parent, heldCtxKey{}, h),
// whether or not its cancelCtx was made before the event.
func TestFnCtx(t *testing.T) {
	type valKey struct{}
	h := &heldKey{}
	lost := errors.New("lost")
	for _, early := range []bool{false, true} {
		parent, cancelParent := context.WithCancelCause(context.WithValue(context.Background(), valKey{}, "v"))
		c := newFnCtx(parent, h)
		if early {
			_ = c.Done()
		}
		if c.Value(heldCtxKey{}) != h || c.Value(valKey{}) != "v" || c.Err() != nil {
			t.Fatalf("early=%v: values or Err wrong before any end", early)
		}
		child, cancelChild := context.WithCancel(c)
		c.lose(lost)
		select {
		case <-child.Done():
		case <-time.After(time.Second):
			t.Fatalf("early=%v: a child did not end with the loss", early)
		}
		if !errors.Is(c.Err(), context.Canceled) || context.Cause(c) != lost || context.Cause(child) != lost {
			t.Fatalf("early=%v: Err %v, Cause %v, child's Cause %v", early, c.Err(), context.Cause(c), context.Cause(child))
		}
		cancelChild()
		cancelParent(nil)
	}

	// end without a cancelCtx: one made later is cancelled, with
	// context.Canceled as the cause.
	c := newFnCtx(context.Background(), nil)
	c.end()
	if c.Value(heldCtxKey{}) != nil || !errors.Is(c.Err(), context.Canceled) || context.Cause(c) != context.Canceled {
		t.Fatalf("after end: Err %v, Cause %v", c.Err(), context.Cause(c))
	}
	<-c.Done()
	c.lose(lost) // after end: no effect, as a cancel after a cancel
	if context.Cause(c) != context.Canceled {
		t.Fatalf("a loss after end changed the cause to %v", context.Cause(c))
	}

	// The parent's end reaches fn's context, made before or after.
	for _, early := range []bool{false, true} {
		parent, cancelParent := context.WithCancelCause(context.Background())
		c := newFnCtx(parent, h)
		if early {
			_ = c.Err()
		}
		cancelParent(lost)
		<-c.Done()
		if context.Cause(c) != lost {
			t.Fatalf("early=%v: cause %v after the parent's end", early, context.Cause(c))
		}
	}

	// A parent deadline is fn's.
	dl := time.Now().Add(time.Hour)
	parent, cancel := context.WithDeadline(context.Background(), dl)
	defer cancel()
	if d, ok := newFnCtx(parent, nil).Deadline(); !ok || !d.Equal(dl) {
		t.Fatalf("Deadline %v %v, want %v", d, ok, dl)
	}

	// Unused, it costs only itself.
	if n := testing.AllocsPerRun(100, func() {
		c := newFnCtx(parent, h)
		_ = c.Value(heldCtxKey{})
		c.end()
	}); n > 1 {
		t.Errorf("an unused fnCtx allocates %v times, want 1", n)
	}
}
