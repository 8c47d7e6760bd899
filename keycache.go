package dlock

import (
	"hash/maphash"
	"sync/atomic"
)

// keyCache remembers what dlock derived from recent string keys (a
// PostgreSQL key's hash, a MySQL name's statement text), so that a key
// used again (the common case: a WithLock per request on a few names) is
// not worked out again. It is direct-mapped: 256 slots, each holding the
// last key stored there. A slot is filled when empty and replaced on
// every 8th miss, so that many distinct keys (a sweep over 10,000) cost
// one allocation per 8 misses, and a key used often gets in soon. Keys
// longer than maxCachedKey are not kept. A hit costs a maphash of the key
// and a comparison.
type keyCache struct {
	seed  maphash.Seed
	slots [256]keySlot
}

type keySlot struct {
	entry  atomic.Pointer[cachedKey]
	misses atomic.Uint32
}

// cachedKey is one slot's key, under prefix, and what was derived from
// it.
type cachedKey struct {
	key, prefix string
	dbKey       any    // PostgreSQL: the key's dbKey
	text        string // MySQL: the statements' text
}

const maxCachedKey = 256

func newKeyCache() *keyCache { return &keyCache{seed: maphash.MakeSeed()} }

// slot returns the slot of key.
func (c *keyCache) slot(key string) *keySlot {
	return &c.slots[maphash.String(c.seed, key)%uint64(len(c.slots))]
}

// get returns the entry of key under prefix, or nil.
func (c *keyCache) get(key, prefix string) *cachedKey {
	if e := c.slot(key).entry.Load(); e != nil && e.key == key && e.prefix == prefix {
		return e
	}
	return nil
}

// put offers e after a miss of e.key (see keyCache for when it is kept).
func (c *keyCache) put(e *cachedKey) {
	if len(e.key) > maxCachedKey {
		return
	}
	s := c.slot(e.key)
	if s.entry.Load() == nil || s.misses.Add(1)%8 == 0 {
		s.entry.Store(e)
	}
}

// pgKeys caches pgKey for string keys: BLAKE2b allocates its state (about
// 400 bytes) on every use.
var pgKeys = newKeyCache()
