package dlock

import (
	"encoding/hex"
	"errors"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// Named key types, as a program would declare them.
type (
	keyAccountID int32
	keyCounter   uint64
	keyName      string
	keyBlob      []byte
)

// hashedName is the form of a hashed MySQL name, as mysqlName documents it.
var hashedName = regexp.MustCompile(`^[A-Za-z0-9._:-]{0,47}~[0-9a-f]{16}$`)

// TestPgKeyVectors checks values shared with sqlalchemy-dlock (computed
// with Python's hashlib.blake2b(data, digest_size=8), little-endian).
func TestPgKeyVectors(t *testing.T) {
	tests := []struct {
		key  any
		want int64
	}{
		{"a", 3405396810240292928},
		{"my-lock", -8841863937742578886},
		{"ключ-юникод", -252651957266972151},
		{strings.Repeat("0123456789", 10), 5840797023804805224},
		{[]byte("a"), 3405396810240292928},
		{keyName("a"), 3405396810240292928},
		{keyBlob("my-lock"), -8841863937742578886},
		{42, 42},
	}
	for _, tt := range tests {
		got, err := pgKey(tt.key, "")
		if err != nil || got != tt.want {
			t.Fatalf("pgKey(%#v) = %v, %v, want %v", tt.key, got, err, tt.want)
		}
	}
}

// TestPgKeyPrefix checks that the prefix goes before string and []byte
// keys and is ignored for integer keys.
func TestPgKeyPrefix(t *testing.T) {
	want, err := pgKey("app:a", "")
	if err != nil {
		t.Fatalf("pgKey(%q) error %v", "app:a", err)
	}
	for _, key := range []any{"a", []byte("a"), keyName("a")} {
		got, err := pgKey(key, "app:")
		if err != nil || got != want {
			t.Fatalf("pgKey(%#v, %q) = %v, %v, want %v", key, "app:", got, err, want)
		}
	}
	bare, _ := pgKey("a", "")
	if bare == want {
		t.Fatalf("pgKey(%q, %q) = pgKey(%q, %q) = %v, want them to differ", "a", "app:", "a", "", want)
	}
	got, err := pgKey(42, "app:")
	if err != nil || got != 42 {
		t.Fatalf("pgKey(42, %q) = %v, %v, want 42", "app:", got, err)
	}
}

// TestPgKeyIntegers checks that every integer kind in int64 range is used
// as is, and that larger unsigned values are ErrInvalidKey.
func TestPgKeyIntegers(t *testing.T) {
	tests := []struct {
		key  any
		want int64
	}{
		{int(-1), -1},
		{int8(math.MinInt8), math.MinInt8},
		{int16(math.MaxInt16), math.MaxInt16},
		{int32(-7), -7},
		{int64(math.MinInt64), math.MinInt64},
		{int64(math.MaxInt64), math.MaxInt64},
		{uint(3), 3},
		{uint8(math.MaxUint8), math.MaxUint8},
		{uint16(math.MaxUint16), math.MaxUint16},
		{uint32(math.MaxUint32), math.MaxUint32},
		{uint64(math.MaxInt64), math.MaxInt64},
		{uintptr(9), 9},
		{keyAccountID(-12), -12},
		{keyCounter(12), 12},
	}
	for _, tt := range tests {
		got, err := pgKey(tt.key, "")
		if err != nil || got != tt.want {
			t.Fatalf("pgKey(%T(%v)) = %v, %v, want %v", tt.key, tt.key, got, err, tt.want)
		}
	}
	for _, key := range []any{uint64(math.MaxInt64) + 1, uint64(math.MaxUint64), keyCounter(math.MaxUint64)} {
		got, err := pgKey(key, "")
		if !errors.Is(err, ErrInvalidKey) {
			t.Fatalf("pgKey(%T(%v)) = %v, %v, want ErrInvalidKey", key, key, got, err)
		}
	}
}

// TestInvalidKeys checks that keys of other types, and empty keys, are
// ErrInvalidKey for both databases, whatever the prefix.
func TestInvalidKeys(t *testing.T) {
	x := 1
	var nilBytes []byte
	keys := []any{
		nil,
		true,
		1.5,
		float32(2),
		complex(1, 2),
		struct{}{},
		&x,
		[]int{1},
		"",
		[]byte{},
		nilBytes,
		keyName(""),
		keyBlob(nil),
	}
	for _, key := range keys {
		for _, prefix := range []string{"", "app:"} {
			if got, err := pgKey(key, prefix); !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("pgKey(%#v, %q) = %v, %v, want ErrInvalidKey", key, prefix, got, err)
			}
			if got, err := mysqlName(key, prefix); !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("mysqlName(%#v, %q) = %q, %v, want ErrInvalidKey", key, prefix, got, err)
			}
		}
	}
}

// TestMySQLNameKept checks names used as they are: integers in decimal,
// and prefixed text of 1 to 64 runes up to U+FFFF.
func TestMySQLNameKept(t *testing.T) {
	bmp64 := strings.Repeat("й", 63) + "\uffff"
	tests := []struct {
		key    any
		prefix string
		want   string
	}{
		{"my-lock", "", "my-lock"},
		{"my-lock", "app:", "app:my-lock"},
		{[]byte("my-lock"), "app:", "app:my-lock"},
		{keyName("ключ"), "", "ключ"},
		{keyBlob("b"), "", "b"},
		{`it's \ "x"`, "", `it's \ "x"`},
		{bmp64, "", bmp64},
		{strings.Repeat("x", 60), "app:", "app:" + strings.Repeat("x", 60)},
		{"~0123456789abcdef", "", "~0123456789abcdef"},
		{42, "app:", "42"},
		{-7, "", "-7"},
		{int64(math.MinInt64), "", "-9223372036854775808"},
		{uint64(math.MaxUint64), "app:", "18446744073709551615"},
		{keyAccountID(-12), "", "-12"},
		{keyCounter(12), "", "12"},
		{uint8(255), "", "255"},
	}
	for _, tt := range tests {
		got, err := mysqlName(tt.key, tt.prefix)
		if err != nil || got != tt.want {
			t.Fatalf("mysqlName(%#v, %q) = %q, %v, want %q", tt.key, tt.prefix, got, err, tt.want)
		}
	}
}

// TestMySQLNameHashed checks the hashed form against values computed
// independently with Python's hashlib.blake2b(data, digest_size=8).
func TestMySQLNameHashed(t *testing.T) {
	tests := []struct {
		key    any
		prefix string
		want   string
	}{
		{"lock-🔒", "", "lock-~eb4cbd37f55a4eec"},
		{"🔒", "lock-", "lock-~eb4cbd37f55a4eec"},
		{strings.Repeat("x", 65), "", strings.Repeat("x", 47) + "~c085721fdfc5c936"},
		{strings.Repeat("x", 61), "xxxx", strings.Repeat("x", 47) + "~c085721fdfc5c936"},
		{[]byte{0xff, 0xfe}, "app:", "app:~6fdb05cefe285d12"},
		{strings.Repeat("é", 40) + strings.Repeat("abcdefghij", 6), "", strings.Repeat("abcdefghij", 4) + "abcdefg~43439dd43e926642"},
	}
	for _, tt := range tests {
		got, err := mysqlName(tt.key, tt.prefix)
		if err != nil || got != tt.want {
			t.Fatalf("mysqlName(%#v, %q) = %q, %v, want %q", tt.key, tt.prefix, got, err, tt.want)
		}
		if !hashedName.MatchString(got) || len(got) > 64 {
			t.Fatalf("mysqlName(%#v, %q) = %q, want it to match %v in 64 bytes", tt.key, tt.prefix, got, hashedName)
		}
		if again, _ := mysqlName(tt.key, tt.prefix); again != got {
			t.Fatalf("mysqlName(%#v, %q) = %q then %q, want the same", tt.key, tt.prefix, got, again)
		}
	}
}

// TestMySQLNameHashedDistinct checks that keys differing only in bytes the
// readable part drops still get different names.
func TestMySQLNameHashedDistinct(t *testing.T) {
	pairs := [][2]any{
		{"lock-🔒", "lock-😀"},
		{"🔒", "😀"},
		{[]byte{'a', 0xff}, []byte{'a', 0xfe}},
		{strings.Repeat("x", 65), strings.Repeat("x", 66)},
		{strings.Repeat("x", 64) + " ", strings.Repeat("x", 64) + "!"},
	}
	for _, p := range pairs {
		a, errA := mysqlName(p[0], "")
		b, errB := mysqlName(p[1], "")
		if errA != nil || errB != nil || a == b {
			t.Fatalf("mysqlName(%#v) = %q, %v and mysqlName(%#v) = %q, %v, want different names", p[0], a, errA, p[1], b, errB)
		}
	}
}

// TestMySQLLiteral checks the hex literal, including for names holding
// quotes and backslashes, which must appear only as hex.
func TestMySQLLiteral(t *testing.T) {
	tests := []struct {
		name string
		want string
	}{
		{"my-lock", `_utf8mb4 X'6d792d6c6f636b'`},
		{`it's \ "x"`, `_utf8mb4 X'69742773205c20227822'`},
		{"й", `_utf8mb4 X'd0b9'`},
		{"", `_utf8mb4 X''`},
	}
	for _, tt := range tests {
		if got := mysqlLiteral(tt.name); got != tt.want {
			t.Fatalf("mysqlLiteral(%q) = %s, want %s", tt.name, got, tt.want)
		}
	}
	key := `it's \ "x"`
	name, err := mysqlName(key, "")
	if err != nil || name != key {
		t.Fatalf("mysqlName(%q) = %q, %v, want %q", key, name, err, key)
	}
	if got := mysqlLiteral(name); !strings.HasPrefix(got, "_utf8mb4 X'") || strings.ContainsAny(got[len("_utf8mb4 X'"):len(got)-1], `'"\`) {
		t.Fatalf("mysqlLiteral(%q) = %s, want only hex between the quotes", name, got)
	}
}

// checkMySQLName fails t unless name is a valid GET_LOCK name: UTF-8 of 1
// to 64 runes, none above U+FFFF.
func checkMySQLName(t *testing.T, name string) {
	t.Helper()
	n := utf8.RuneCountInString(name)
	if !utf8.ValidString(name) || n < 1 || n > 64 {
		t.Fatalf("mysqlName gave %q (%d runes), want valid UTF-8 of 1 to 64 runes", name, n)
	}
	for _, r := range name {
		if r > 0xFFFF {
			t.Fatalf("mysqlName gave %q, want no rune above U+FFFF, found %U", name, r)
		}
	}
	lit := mysqlLiteral(name)
	const head = "_utf8mb4 X'"
	if !strings.HasPrefix(lit, head) || !strings.HasSuffix(lit, "'") {
		t.Fatalf("mysqlLiteral(%q) = %s, want %s...'", name, lit, head)
	}
	back, err := hex.DecodeString(lit[len(head) : len(lit)-1])
	if err != nil || string(back) != name {
		t.Fatalf("mysqlLiteral(%q) = %s, decodes to %q, %v, want the name back", name, lit, back, err)
	}
}

// FuzzPgKey checks that pgKey never panics, is deterministic, treats
// string and []byte alike, prefixes only text keys, and rejects only empty
// text.
func FuzzPgKey(f *testing.F) {
	f.Add("", "a", int64(42))
	f.Add("", "my-lock", int64(-7))
	f.Add("", "ключ-юникод", int64(math.MinInt64))
	f.Add("", strings.Repeat("0123456789", 10), int64(math.MaxInt64))
	f.Add("app:", "a", int64(0))
	f.Add("app:", "", int64(1))
	f.Fuzz(func(t *testing.T, prefix, key string, n int64) {
		got, err := pgKey(key, prefix)
		if key == "" {
			if !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("pgKey(%q, %q) = %v, %v, want ErrInvalidKey", key, prefix, got, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("pgKey(%q, %q) error %v", key, prefix, err)
		}
		if again, _ := pgKey(key, prefix); again != got {
			t.Fatalf("pgKey(%q, %q) = %v then %v, want the same", key, prefix, got, again)
		}
		if b, err := pgKey([]byte(key), prefix); err != nil || b != got {
			t.Fatalf("pgKey([]byte(%q), %q) = %v, %v, want %v", key, prefix, b, err, got)
		}
		if whole, err := pgKey(prefix+key, ""); err != nil || whole != got {
			t.Fatalf("pgKey(%q, \"\") = %v, %v, want %v", prefix+key, whole, err, got)
		}
		if i, err := pgKey(n, prefix); err != nil || i != n {
			t.Fatalf("pgKey(%d, %q) = %v, %v, want %d", n, prefix, i, err, n)
		}
	})
}

// FuzzMySQLName checks that mysqlName never panics, is deterministic,
// treats string and []byte alike, keeps eligible names, hashes the rest in
// the documented form, and always gives a valid name whose literal decodes
// back to it.
func FuzzMySQLName(f *testing.F) {
	f.Add("", []byte("my-lock"), int64(42))
	f.Add("app:", []byte("ключ-юникод"), int64(-7))
	f.Add("", []byte("lock-🔒"), int64(math.MinInt64))
	f.Add("", []byte{'a', 0xff}, int64(0))
	f.Add("", []byte(strings.Repeat("x", 65)), int64(1))
	f.Add("", []byte(`it's \ "x"`), int64(2))
	f.Fuzz(func(t *testing.T, prefix string, key []byte, n int64) {
		got, err := mysqlName(key, prefix)
		if len(key) == 0 {
			if !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("mysqlName(%q, %q) = %q, %v, want ErrInvalidKey", key, prefix, got, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("mysqlName(%q, %q) error %v", key, prefix, err)
		}
		checkMySQLName(t, got)
		if again, _ := mysqlName(key, prefix); again != got {
			t.Fatalf("mysqlName(%q, %q) = %q then %q, want the same", key, prefix, got, again)
		}
		if s, err := mysqlName(string(key), prefix); err != nil || s != got {
			t.Fatalf("mysqlName(%q as string, %q) = %q, %v, want %q", key, prefix, s, err, got)
		}
		whole := prefix + string(key)
		if mysqlPlain(whole) {
			if got != whole {
				t.Fatalf("mysqlName(%q, %q) = %q, want %q", key, prefix, got, whole)
			}
		} else if !hashedName.MatchString(got) {
			t.Fatalf("mysqlName(%q, %q) = %q, want it to match %v", key, prefix, got, hashedName)
		}
		i, err := mysqlName(n, prefix)
		if err != nil || i != strconv.FormatInt(n, 10) {
			t.Fatalf("mysqlName(%d, %q) = %q, %v, want %q", n, prefix, i, err, strconv.FormatInt(n, 10))
		}
		checkMySQLName(t, i)
	})
}

// BenchmarkPgKeyString measures hashing a short string key with a prefix.
func BenchmarkPgKeyString(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pgKey("my-lock", "app:"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMySQLNameString measures naming a short string key with a
// prefix.
func BenchmarkMySQLNameString(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := mysqlName("my-lock", "app:"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestPGKeyCache checks that the cached dbKey of a string key is pgKey's,
// under each prefix, and that a hit allocates nothing.
func TestPGKeyCache(t *testing.T) {
	var be pgBackend
	for _, prefix := range []string{"", "app:", "other:"} {
		for _, key := range []string{"k", "orders:42", strings.Repeat("x", 300)} {
			for range 2 { // a miss, then a hit
				got, err := be.dbKey(key, prefix)
				want, _ := pgKey(key, prefix)
				if err != nil || got != any(want) {
					t.Fatalf("dbKey(%q, %q) = %v, %v; want %v", key, prefix, got, err, want)
				}
			}
		}
	}
	if _, err := be.dbKey("", ""); err == nil {
		t.Error("dbKey of an empty key: no error")
	}
	_, _ = be.dbKey("hot", "")
	if n := testing.AllocsPerRun(100, func() { _, _ = be.dbKey("hot", "") }); n != 0 {
		t.Errorf("a cached dbKey allocates %v times", n)
	}
}
