package dlock

import (
	"hash/maphash"
	"sync/atomic"
)

// keyCache remembers the dbKey of recent string keys, so that a key used
// again (the common case: a WithLock per request on a few names) is not
// hashed again. It is direct-mapped: 256 slots, each the last key that
// fell there, replaced on a miss; keys longer than maxCachedKey are not
// kept. A hit costs a maphash of the key and a comparison; a miss, one
// allocation more than no cache.
type keyCache struct {
	seed  maphash.Seed
	slots [256]atomic.Pointer[cachedKey]
}

// cachedKey is one slot's key, under prefix, and its dbKey.
type cachedKey struct {
	key, prefix string
	dbKey       any
}

const maxCachedKey = 256

func newKeyCache() *keyCache { return &keyCache{seed: maphash.MakeSeed()} }

// slot returns the slot of key.
func (c *keyCache) slot(key string) *atomic.Pointer[cachedKey] {
	return &c.slots[maphash.String(c.seed, key)%uint64(len(c.slots))]
}

// get returns the dbKey of key under prefix, if the cache has it.
func (c *keyCache) get(key, prefix string) (any, bool) {
	if e := c.slot(key).Load(); e != nil && e.key == key && e.prefix == prefix {
		return e.dbKey, true
	}
	return nil, false
}

// put remembers dbKey for key under prefix.
func (c *keyCache) put(key, prefix string, dbKey any) {
	if len(key) <= maxCachedKey {
		c.slot(key).Store(&cachedKey{key: key, prefix: prefix, dbKey: dbKey})
	}
}

// pgKeys caches pgKey for string keys: BLAKE2b allocates its state (about
// 400 bytes) on every use.
var pgKeys = newKeyCache()
