package dlock

import (
	"context"
	"sync"
	"time"
)

// fnCtx is the context fn of a WithLock or Connection runs with: its
// parent, carrying the heldKey h (when not nil), that also ends when a
// lock is found lost (lose) and when the call returns (end). It behaves as
// context.WithCancelCause over context.WithValue(parent, heldCtxKey{}, h),
// makes that cancelCtx only when it is first needed: by Done, Err, a
// Value other than the held key, or a loss. An fn that never looks at its
// context (and a WithLock's own statements, which use the caller's)
// costs one allocation instead of four, and the parent gets no child to
// register and remove.
type fnCtx struct {
	parent context.Context
	h      *heldKey // nil: the parent carries the held key, if any

	once   sync.Once
	inner  context.Context // set once by once; read after once.Do
	cancel context.CancelCauseFunc

	mu    sync.Mutex
	ended bool // end was called: a cancelCtx made later is made cancelled
}

var _ context.Context = (*fnCtx)(nil)

// newFnCtx returns fn's context over parent, with h as the held key when h
// is not nil.
func newFnCtx(parent context.Context, h *heldKey) *fnCtx {
	return &fnCtx{parent: parent, h: h}
}

// make makes the cancelCtx once; one made after end is cancelled at once,
// as it would have been at end.
func (c *fnCtx) make() {
	c.once.Do(func() {
		inner, cancel := context.WithCancelCause(c.parent)
		c.mu.Lock()
		c.inner, c.cancel = inner, cancel
		ended := c.ended
		c.mu.Unlock()
		if ended {
			cancel(nil)
		}
	})
}

func (c *fnCtx) Deadline() (time.Time, bool) { return c.parent.Deadline() }

func (c *fnCtx) Done() <-chan struct{} {
	c.make()
	return c.inner.Done()
}

func (c *fnCtx) Err() error {
	c.make()
	return c.inner.Err()
}

// Value answers the held key itself; any other key (context.Cause's
// included) goes through the cancelCtx, as with the contexts it replaces.
func (c *fnCtx) Value(key any) any {
	if _, ok := key.(heldCtxKey); ok {
		if c.h != nil {
			return c.h
		}
		return c.parent.Value(key)
	}
	c.make()
	return c.inner.Value(key)
}

// lose ends the context with cause (a loss of the lock).
func (c *fnCtx) lose(cause error) {
	c.make()
	c.cancel(cause)
}

// end ends the context when the call returns (context.Canceled), without
// making the cancelCtx if nothing has asked for it yet.
func (c *fnCtx) end() {
	c.mu.Lock()
	c.ended = true
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel(nil)
	}
}
