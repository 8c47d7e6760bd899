package dlock

import (
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"
)

type weakKey struct{ _ [64]byte } // large enough never to share a tiny block

func TestWeakMapLoadStore(t *testing.T) {
	var w weakMap[weakKey, int]
	a, b := new(weakKey), new(weakKey)
	if _, ok := w.load(a); ok {
		t.Fatal("load of an empty map found an entry")
	}
	w.store(a, 1)
	if v, ok := w.load(a); !ok || v != 1 {
		t.Fatalf("load(a) = %d, %v; want 1, true", v, ok)
	}
	if _, ok := w.load(b); ok {
		t.Fatal("load(b) found a's entry")
	}
	w.store(a, 2)
	if v, _ := w.load(a); v != 2 {
		t.Fatalf("after a second store, load(a) = %d; want 2", v)
	}
	calls := 0
	mk := func() int { calls++; return 3 }
	if v := w.loadOrStore(b, mk); v != 3 || calls != 1 {
		t.Fatalf("loadOrStore(b) = %d with %d calls of mk; want 3 with 1", v, calls)
	}
	if v := w.loadOrStore(b, mk); v != 3 || calls != 1 {
		t.Fatalf("second loadOrStore(b) = %d with %d calls of mk; want 3 with 1", v, calls)
	}
	runtime.KeepAlive(a)
	runtime.KeepAlive(b)
}

// TestWeakMapForgetsCollectedKeys checks that an entry goes with its key,
// and that an entry whose key is gone never matches a new key at the same
// address.
func TestWeakMapForgetsCollectedKeys(t *testing.T) {
	var w weakMap[weakKey, int]
	addrs := make(map[uintptr]bool)
	for i := range 100 {
		k := new(weakKey)
		addrs[uintptr(unsafe.Pointer(k))] = true
		if i%2 == 0 {
			w.store(k, i)
		} else {
			w.loadOrStore(k, func() int { return i })
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		w.mu.RLock()
		n := len(w.m)
		w.mu.RUnlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d entries left 5s after their keys became garbage", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// New keys, some of them at the addresses of the old ones: none finds
	// an old value.
	reused := 0
	for range 1000 {
		k := new(weakKey)
		if addrs[uintptr(unsafe.Pointer(k))] {
			reused++
		}
		if v, ok := w.load(k); ok {
			t.Fatalf("a new key found the value %d", v)
		}
	}
	t.Logf("%d new keys reused an address", reused)
}

// TestWeakMapStaleEntryAtReusedAddress puts an entry whose key is gone at
// the address of a live key, as happens when the runtime reuses the
// address before the old key's cleanup has run: load must miss, and
// loadOrStore must replace it.
func TestWeakMapStaleEntryAtReusedAddress(t *testing.T) {
	var w weakMap[weakKey, int]
	live := new(weakKey)
	addr := uintptr(unsafe.Pointer(live))
	stale := &weakEntry[weakKey, int]{v: 7} // a zero weak pointer: Value is nil
	w.m = map[uintptr]*weakEntry[weakKey, int]{addr: stale}
	if _, ok := w.load(live); ok {
		t.Fatal("load matched an entry whose key is gone")
	}
	if v := w.loadOrStore(live, func() int { return 8 }); v != 8 {
		t.Fatalf("loadOrStore = %d; want 8 (the stale entry replaced)", v)
	}
	if v, ok := w.load(live); !ok || v != 8 {
		t.Fatalf("load after loadOrStore = %d, %v; want 8, true", v, ok)
	}
	runtime.KeepAlive(live)
}

func TestWeakMapConcurrentLoadOrStore(t *testing.T) {
	var w weakMap[weakKey, *int]
	k := new(weakKey)
	got := make([]*int, 8)
	var wg sync.WaitGroup
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = w.loadOrStore(k, func() *int { return new(int) })
		}()
	}
	wg.Wait()
	for _, p := range got {
		if p != got[0] {
			t.Fatal("concurrent loadOrStore calls returned different values")
		}
	}
	runtime.KeepAlive(k)
}
