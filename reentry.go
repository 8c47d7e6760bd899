package dlock

import (
	"context"
	"fmt"
)

// Re-entry: the keys a WithLock holds along its fn's context, and the
// refusal of a lock on one of them again (ErrReentrant).

// heldKey is a key that a WithLock holds while its fn runs, kept in fn's
// context: a call along that context for the same key is a re-entry.
type heldKey struct {
	server *server // the pool's
	dbKey  any
	parent *heldKey
	pin    *pin // the session's, for WithLock's own Lock; set by connection
	// For the Observer, when no session could be had for the acquire.
	key  any
	mode options
	wait waitMode
}

type heldCtxKey struct{}

// checkReentry refuses a lock on dbKey when a WithLock along ctx holds it.
func checkReentry(ctx context.Context, srv *server, dbKey, key any) error {
	h, _ := ctx.Value(heldCtxKey{}).(*heldKey)
	for ; h != nil; h = h.parent {
		if h.server == srv && h.dbKey == dbKey {
			return reentrant(key, "an enclosing WithLock along ctx holds it")
		}
	}
	return nil
}

// reentrant is the error of a refused re-entry.
func reentrant(key any, why string) error {
	return fmt.Errorf("%w: %w: %s: %s", ErrNotAcquired, ErrReentrant, keyText(key), why)
}
