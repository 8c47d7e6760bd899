package dlock

import "fmt"

// DBKey returns what a server of the given GORM dialect sees for key with
// prefix prepended (as [Plugin.KeyPrefix] prepends it): for "postgres" the
// int64 key of the pg_advisory_lock family, for "mysql" (MySQL and MariaDB)
// the GET_LOCK name as a string. It is [Lock.DBKey] without a database,
// for tools and for writing the same lock in SQL by hand or from
// sqlalchemy-dlock; the package documentation describes both mappings.
//
// Errors: [ErrInvalidKey]; [ErrUnsupportedDialect] for any other dialect.
func DBKey(dialect string, key any, prefix string) (any, error) {
	switch dialect {
	case "postgres":
		return pgKey(key, prefix)
	case "mysql":
		return mysqlName(key, prefix)
	}
	return nil, fmt.Errorf("%w: %q", ErrUnsupportedDialect, dialect)
}
