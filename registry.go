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
// when a new object has the same address, and the key's cleanup deletes
// it unless a live key has taken the address since. The address is a
// plain map key, never boxed: a boxed address is a small allocation that
// could share a block with a small key and keep it alive.
type weakMap[K, V any] struct {
	mu sync.RWMutex
	m  map[uintptr]*weakEntry[K, V]
}

type weakEntry[K, V any] struct {
	key weak.Pointer[K]
	v   V
}

func (w *weakMap[K, V]) load(k *K) (V, bool) {
	w.mu.RLock()
	e := w.m[uintptr(unsafe.Pointer(k))]
	w.mu.RUnlock()
	if e != nil && e.key.Value() == k {
		return e.v, true
	}
	var zero V
	return zero, false
}

func (w *weakMap[K, V]) store(k *K, v V) {
	w.put(k, func(*weakEntry[K, V]) bool { return true }, v)
}

// loadOrStore returns the value for k, storing mk() first if there is none.
func (w *weakMap[K, V]) loadOrStore(k *K, mk func() V) V {
	if v, ok := w.load(k); ok {
		return v
	}
	return w.put(k, func(old *weakEntry[K, V]) bool { return old.key.Value() != k }, mk())
}

// put stores v for k unless k has an entry that replace refuses, and
// returns the value k has then.
func (w *weakMap[K, V]) put(k *K, replace func(old *weakEntry[K, V]) bool, v V) V {
	addr := uintptr(unsafe.Pointer(k))
	wp := weak.Make(k)
	w.mu.Lock()
	defer w.mu.Unlock()
	old := w.m[addr]
	if old != nil && !replace(old) {
		return old.v
	}
	if w.m == nil {
		w.m = make(map[uintptr]*weakEntry[K, V])
	}
	w.m[addr] = &weakEntry[K, V]{key: wp, v: v}
	if old == nil || old.key != wp {
		// The first entry of this key; an older one at the address was
		// another key's, whose own cleanup leaves this one alone.
		runtime.AddCleanup(k, w.forget, addr)
	}
	return v
}

// forget deletes the entry at addr if its key is gone.
func (w *weakMap[K, V]) forget(addr uintptr) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if e := w.m[addr]; e != nil && e.key.Value() == nil {
		delete(w.m, addr)
	}
}
