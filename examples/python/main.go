// Command python shows a Go service and a Python service sharing one lock:
// dlock and sqlalchemy-dlock name the same database lock for the same key.
//
// First, without a database, it computes each PostgreSQL key the way
// sqlalchemy-dlock does (BLAKE2b with an 8-byte digest of the UTF-8 bytes,
// read as a signed int64 in the host's byte order, little-endian on x86-64
// and arm64) and checks it against the published key vectors.
//
// Then, on each database, for each key it
//
//   - makes a dlock Lock and checks its DBKey against the vectors;
//   - acquires it with dlock, and from another session sends exactly what
//     sqlalchemy-dlock sends for that key, pg_try_advisory_lock(<int64>)
//     or GET_LOCK(<name>, 0) with the key bound as a parameter, which
//     finds the lock busy;
//   - releases it with dlock, and sends the same statement again, which
//     now gets the lock (and releases it).
//
// The Python side is in examples/README.md; this program stands in for it, so that
// it runs without Python.
//
// Run it with `make examples`, or `go run ./python` in examples/.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gormdlock/dlock"
	"github.com/gormdlock/dlock/examples/internal/exampledb"
	"golang.org/x/crypto/blake2b"
	"gorm.io/gorm"
)

// vectors are the keys every implementation must agree on.
var vectors = []struct {
	key   any
	pg    int64  // PostgreSQL: pg_advisory_lock(pg)
	mysql string // MySQL and MariaDB: GET_LOCK(mysql, ...)
	note  string // for the MySQL name
}{
	{key: "a", pg: 3405396810240292928, mysql: "a"},
	{key: "my-lock", pg: -8841863937742578886, mysql: "my-lock"},
	{key: "ключ-юникод", pg: -252651957266972151, mysql: "ключ-юникод"},
	{
		key: strings.Repeat("0123456789", 10), pg: 5840797023804805224,
		mysql: "01234567890123456789012345678901234567890123456~68500b81f2ad0e51",
		note:  "longer than 64 characters: hashed by dlock; sqlalchemy-dlock refuses it, so give it this name",
	},
	{key: 42, pg: 42, mysql: "42"},
}

func main() {
	if err := checkFormula(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	exampledb.Main(run)
}

// pythonKey is sqlalchemy-dlock's to_int64_key for a str key:
// int.from_bytes(blake2b(key.encode(), digest_size=8).digest(), sys.byteorder, signed=True).
func pythonKey(key string) int64 {
	h, err := blake2b.New(8, nil)
	if err != nil {
		panic(err) // a size of 8 and no key cannot fail
	}
	h.Write([]byte(key))
	return int64(binary.LittleEndian.Uint64(h.Sum(nil)))
}

// label shortens a long key for printing.
func label(key any) string {
	if s, ok := key.(string); ok && utf8.RuneCountInString(s) > 20 {
		return fmt.Sprintf("%q (%d chars)", string([]rune(s)[:10])+"…", utf8.RuneCountInString(s))
	}
	return fmt.Sprintf("%#v", key)
}

// checkFormula checks sqlalchemy-dlock's formula against the vectors.
func checkFormula() error {
	for _, v := range vectors {
		want := v.pg
		if s, ok := v.key.(string); ok {
			want = pythonKey(s)
		}
		fmt.Printf("[python] key %-26s sqlalchemy-dlock's PostgreSQL key %d\n", label(v.key), want)
		if want != v.pg {
			return fmt.Errorf("key %s: sqlalchemy-dlock's formula gives %d, the vector is %d", label(v.key), want, v.pg)
		}
	}
	return nil
}

func run(ctx context.Context, s *exampledb.Server) error {
	db, err := s.Open(ctx)
	if err != nil {
		return err
	}
	python, err := s.Open(ctx) // stands in for the Python service
	if err != nil {
		return err
	}
	python = python.WithContext(ctx)
	if s.Dialect == exampledb.MySQL {
		s.Printf("the Python side sends, on its own session: SELECT GET_LOCK(%%s, 0) with the name bound")
	} else {
		s.Printf("the Python side sends, on its own session: SELECT pg_try_advisory_lock(%%s) with the int64 key bound")
	}
	for _, v := range vectors {
		var want any = v.pg
		if s.Dialect == exampledb.MySQL {
			want = v.mysql
		}
		err := dlock.Connection(ctx, db, func(tx *gorm.DB) (err error) {
			lock, err := dlock.New(tx, v.key)
			if err != nil {
				return err
			}
			if lock.DBKey() != want {
				return fmt.Errorf("key %s: DBKey() = %#v, want %#v", label(v.key), lock.DBKey(), want)
			}
			ok, err := lock.Acquire(ctx, dlock.Timeout(time.Second))
			if err != nil || !ok {
				return fmt.Errorf("key %s: Acquire = %v, %w", label(v.key), ok, err)
			}
			defer func() { err = errors.Join(err, lock.Close(ctx)) }()
			got, err := pythonTry(python, s.Dialect, want)
			if err != nil {
				return err
			}
			if got {
				return fmt.Errorf("key %s: the Python side got %v while dlock held it", label(v.key), want)
			}
			s.Printf("key %-26s DBKey %-21v held by dlock; the Python side's try: busy", label(v.key), want)
			if v.note != "" && s.Dialect == exampledb.MySQL {
				s.Printf("  (%s)", v.note)
			}
			return nil
		})
		if err != nil {
			return err
		}
		// Released: now the Python side gets it.
		got, err := pythonTry(python, s.Dialect, want)
		if err != nil {
			return err
		}
		if !got {
			return fmt.Errorf("key %s: the Python side did not get the lock after dlock released it", label(v.key))
		}
	}
	s.Printf("dlock and sqlalchemy-dlock name the same lock for every key")
	return nil
}

// pythonTry sends what sqlalchemy-dlock sends for acquire(block=False) on
// its own session, releases the lock if it got it, and reports whether it
// got it.
func pythonTry(python *gorm.DB, dialect string, key any) (got bool, err error) {
	err = python.Connection(func(conn *gorm.DB) error {
		if dialect == exampledb.MySQL {
			var r int
			if err := conn.Raw("SELECT GET_LOCK(?, 0)", key).Scan(&r).Error; err != nil {
				return err
			}
			if got = r == 1; got {
				return conn.Exec("DO RELEASE_LOCK(?)", key).Error
			}
			return nil
		}
		if err := conn.Raw("SELECT pg_try_advisory_lock(?)", key).Scan(&got).Error; err != nil {
			return err
		}
		if got {
			var released bool
			return conn.Raw("SELECT pg_advisory_unlock(?)", key).Scan(&released).Error
		}
		return nil
	})
	return got, err
}
