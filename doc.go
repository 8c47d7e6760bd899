// Package dlock gives GORM programs database session-level named locks.
package dlock
