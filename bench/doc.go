// Package bench holds the benchmarks of github.com/gormdlock/dlock on real
// MariaDB/MySQL and PostgreSQL servers, side by side with the same lock
// statements written by hand on the same *sql.Conn and with the Go peers
// github.com/sanketplus/go-mysql-lock and github.com/allisson/go-pglock.
//
// The benchmarks count round trips with a counting dialer: every
// connection is wrapped so that each burst of client writes that follows
// a read from the server (or opens the connection) counts as one round
// trip. Run them all, interleaved, and print the tables with
//
//	make bench
//
// which runs ./cmd/benchtab. The servers come from DLOCK_TEST_MYSQL_DSN
// and DLOCK_TEST_POSTGRES_DSN (defaults root@tcp(127.0.0.1:3306)/test and
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable); a server that
// does not answer is skipped.
package bench
