package dlock

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"unicode/utf8"

	"golang.org/x/crypto/blake2b"
)

// keyForm tells which field of a keyParts holds the key.
type keyForm uint8

const (
	signedKey   keyForm = iota // keyParts.i
	unsignedKey                // keyParts.u
	textKey                    // keyParts.text
)

// keyParts is a lock key reduced to a signed integer, an unsigned integer
// or a non-empty text (the bytes of a string or []byte key, unprefixed).
type keyParts struct {
	form keyForm
	i    int64
	u    uint64
	text string
}

// splitKey reduces key to its keyParts. It accepts every integer kind,
// string and []byte, named types of those included; builtin types take a
// type switch, named types go through reflect. An empty string or []byte,
// nil and every other type give an error wrapping ErrInvalidKey.
func splitKey(key any) (keyParts, error) {
	switch k := key.(type) {
	case nil:
		return keyParts{}, fmt.Errorf("%w: nil key", ErrInvalidKey)
	case int64:
		return keyParts{form: signedKey, i: k}, nil
	case int:
		return keyParts{form: signedKey, i: int64(k)}, nil
	case int32:
		return keyParts{form: signedKey, i: int64(k)}, nil
	case int16:
		return keyParts{form: signedKey, i: int64(k)}, nil
	case int8:
		return keyParts{form: signedKey, i: int64(k)}, nil
	case uint64:
		return keyParts{form: unsignedKey, u: k}, nil
	case uint:
		return keyParts{form: unsignedKey, u: uint64(k)}, nil
	case uint32:
		return keyParts{form: unsignedKey, u: uint64(k)}, nil
	case uint16:
		return keyParts{form: unsignedKey, u: uint64(k)}, nil
	case uint8:
		return keyParts{form: unsignedKey, u: uint64(k)}, nil
	case uintptr:
		return keyParts{form: unsignedKey, u: uint64(k)}, nil
	case string:
		return textParts(k, key)
	case []byte:
		return textParts(string(k), key)
	}
	v := reflect.ValueOf(key)
	switch v.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return keyParts{form: signedKey, i: v.Int()}, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return keyParts{form: unsignedKey, u: v.Uint()}, nil
	case reflect.String:
		return textParts(v.String(), key)
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return textParts(string(v.Bytes()), key)
		}
	}
	return keyParts{}, fmt.Errorf("%w: unsupported key type %T", ErrInvalidKey, key)
}

// textParts wraps text as a textKey, or reports an empty key of the type of
// key (the original key, for the message) as ErrInvalidKey.
func textParts(text string, key any) (keyParts, error) {
	if text == "" {
		return keyParts{}, fmt.Errorf("%w: empty %T key", ErrInvalidKey, key)
	}
	return keyParts{form: textKey, text: text}, nil
}

// digest8 returns the unkeyed BLAKE2b digest of size 8 (not a truncated
// BLAKE2b-512) of prefix followed by text, as Python's
// hashlib.blake2b(data, digest_size=8) computes it.
func digest8(prefix, text string) [8]byte {
	h, _ := blake2b.New(8, nil) // cannot fail: the size is valid, no key
	// Copying through a stack buffer spares a heap copy of long strings.
	var buf [blake2b.BlockSize]byte
	for _, s := range [2]string{prefix, text} {
		for s != "" {
			n := copy(buf[:], s)
			h.Write(buf[:n])
			s = s[n:]
		}
	}
	var d [8]byte
	h.Sum(d[:0])
	return d
}

// pgKey maps a key to the int64 the PostgreSQL pg_advisory_lock(bigint) family sees.
//
// An integer key is used as is, without prefix; an unsigned one above
// math.MaxInt64 is ErrInvalidKey. A string key (its UTF-8 bytes) or []byte
// key is prefixed with prefix and hashed with BLAKE2b of digest size 8; the
// digest is read as a little-endian int64. Other keys are ErrInvalidKey.
func pgKey(key any, prefix string) (int64, error) {
	p, err := splitKey(key)
	if err != nil {
		return 0, err
	}
	switch p.form {
	case signedKey:
		return p.i, nil
	case unsignedKey:
		if p.u > math.MaxInt64 {
			return 0, fmt.Errorf("%w: %T %d overflows int64", ErrInvalidKey, key, p.u)
		}
		return int64(p.u), nil
	}
	d := digest8(prefix, p.text)
	return int64(binary.LittleEndian.Uint64(d[:])), nil
}

// mysqlName maps a key to the GET_LOCK name (a Go string holding UTF-8).
//
// An integer key becomes its decimal form (42 -> "42", -7 -> "-7"), never
// prefixed. A string or []byte key is prefixed with prefix; the result name
// is used as is when it is valid UTF-8 of 1 to 64 characters, none above
// U+FFFF. Any other name (too long, invalid UTF-8, or holding an emoji or
// other supplementary character) is replaced by
//
//	R + "~" + 16 lowercase hex digits
//
// where the hex digits encode the 8-byte BLAKE2b digest (digest size 8,
// no key) of the whole name, and R is the name's bytes in A-Z, a-z, 0-9,
// '.', '_', ':' and '-', in order, every other byte dropped, cut at 47
// bytes. That form is ASCII and at most 64 characters long. Other keys are
// ErrInvalidKey.
func mysqlName(key any, prefix string) (string, error) {
	p, err := splitKey(key)
	if err != nil {
		return "", err
	}
	switch p.form {
	case signedKey:
		return strconv.FormatInt(p.i, 10), nil
	case unsignedKey:
		return strconv.FormatUint(p.u, 10), nil
	}
	name := prefix + p.text
	if mysqlPlain(name) {
		return name, nil
	}
	return mysqlHashed(name), nil
}

// mysqlPlain reports whether name can be a GET_LOCK name as is: valid
// UTF-8 of 1 to 64 runes, none above U+FFFF.
func mysqlPlain(name string) bool {
	if !utf8.ValidString(name) {
		return false
	}
	n := 0
	for _, r := range name {
		n++
		if n > 64 || r > 0xFFFF {
			return false
		}
	}
	return n > 0
}

// mysqlHashed returns the hashed GET_LOCK name of name, as described at
// mysqlName: up to 47 readable bytes of name, "~", and the hex digest.
func mysqlHashed(name string) string {
	const readableMax = 47
	out := make([]byte, 0, readableMax+1+16)
	for i := 0; i < len(name) && len(out) < readableMax; i++ {
		if c := name[i]; readableByte(c) {
			out = append(out, c)
		}
	}
	d := digest8("", name)
	out = append(out, '~')
	out = hex.AppendEncode(out, d[:])
	return string(out)
}

// readableByte reports whether c is one of A-Z, a-z, 0-9, '.', '_', ':'
// and '-', the bytes the hashed form of a MySQL name keeps.
func readableByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return c == '.' || c == '_' || c == ':' || c == '-'
}

// mysqlLiteral renders a name as a MySQL hex string literal with an introducer,
// e.g. "my-lock" -> `_utf8mb4 X'6d792d6c6f636b'` (lowercase hex). Never quotes or escapes.
//
// The literal is safe to put into SQL text whatever name holds, since it
// is made of ASCII letters, digits, a space and two quotes only.
func mysqlLiteral(name string) string {
	const head = "_utf8mb4 X'"
	out := make([]byte, 0, len(head)+2*len(name)+1)
	out = append(out, head...)
	out = hex.AppendEncode(out, []byte(name))
	out = append(out, '\'')
	return string(out)
}
