package dlock

import (
	"runtime"
	"sync"
	"unsafe"
	"weak"
)

// weakMap maps a pointer to a value without keeping the pointer alive:
// the entry disappears once the key is garbage collected. dlock keeps
// per-pool and per-session state this way, because neither GORM nor
// database/sql tells a plugin when a pool or a pinned session is closed.
// A value must not refer to its key, or the key never becomes garbage.
//
// Entries are found by the key's address and confirmed by a weak pointer
// to the key, so that a lookup makes no weak pointer (which takes a lock
// in the runtime): an entry whose key is gone no longer matches, even
// when a new object has the same address, and its key's cleanup deletes
// it unless a live key has taken the address since.
type weakMap[K, V any] struct {
	m sync.Map // uintptr(key) -> *weakEntry[K, V]
}

type weakEntry[K, V any] struct {
	key weak.Pointer[K]
	v   V
}

func (w *weakMap[K, V]) load(k *K) (V, bool) {
	if e, ok := w.m.Load(uintptr(unsafe.Pointer(k))); ok {
		if e := e.(*weakEntry[K, V]); e.key.Value() == k {
			return e.v, true
		}
	}
	var zero V
	return zero, false
}

func (w *weakMap[K, V]) store(k *K, v V) {
	addr := uintptr(unsafe.Pointer(k))
	e := &weakEntry[K, V]{key: weak.Make(k), v: v}
	if old, loaded := w.m.Swap(addr, e); !loaded || old.(*weakEntry[K, V]).key != e.key {
		w.cleanUpWith(k, addr)
	}
}

// loadOrStore returns the value for k, storing mk() first if there is none.
func (w *weakMap[K, V]) loadOrStore(k *K, mk func() V) V {
	if v, ok := w.load(k); ok {
		return v
	}
	addr := uintptr(unsafe.Pointer(k))
	e := &weakEntry[K, V]{key: weak.Make(k), v: mk()}
	for {
		cur, loaded := w.m.LoadOrStore(addr, e)
		if !loaded {
			w.cleanUpWith(k, addr)
			return e.v
		}
		if c := cur.(*weakEntry[K, V]); c.key.Value() == k {
			return c.v // stored concurrently
		} else if w.m.CompareAndSwap(addr, c, e) {
			w.cleanUpWith(k, addr) // c's key is gone; its cleanup finds e and leaves it
			return e.v
		}
	}
}

// cleanUpWith deletes k's entry once k is garbage collected.
func (w *weakMap[K, V]) cleanUpWith(k *K, addr uintptr) {
	runtime.AddCleanup(k, func(addr uintptr) {
		if e, ok := w.m.Load(addr); ok && e.(*weakEntry[K, V]).key.Value() == nil {
			w.m.CompareAndDelete(addr, e)
		}
	}, addr)
}
