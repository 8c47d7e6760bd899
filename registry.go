package dlock

import (
	"runtime"
	"sync"
	"weak"
)

// weakMap maps a pointer to a value without keeping the pointer alive:
// the entry disappears once the key is garbage collected. dlock keeps
// per-pool and per-session state this way, because neither GORM nor
// database/sql tells a plugin when a pool or a pinned session is closed.
// A value must not refer to its key, or the key never becomes garbage.
type weakMap[K, V any] struct {
	m sync.Map // weak.Pointer[K] -> V
}

func (w *weakMap[K, V]) load(k *K) (V, bool) {
	v, ok := w.m.Load(weak.Make(k))
	if !ok {
		var zero V
		return zero, false
	}
	return v.(V), true
}

func (w *weakMap[K, V]) store(k *K, v V) {
	wp := weak.Make(k)
	if _, loaded := w.m.Swap(wp, v); !loaded {
		runtime.AddCleanup(k, func(wp weak.Pointer[K]) { w.m.Delete(wp) }, wp)
	}
}

// loadOrStore returns the value for k, storing mk() first if there is none.
func (w *weakMap[K, V]) loadOrStore(k *K, mk func() V) V {
	wp := weak.Make(k)
	if v, ok := w.m.Load(wp); ok {
		return v.(V)
	}
	v, loaded := w.m.LoadOrStore(wp, mk())
	if !loaded {
		runtime.AddCleanup(k, func(wp weak.Pointer[K]) { w.m.Delete(wp) }, wp)
	}
	return v.(V)
}
