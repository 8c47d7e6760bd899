//go:build !containers

package exampledb

import "fmt"

// startContainer, in a build without the tag "containers", starts nothing:
// it says how to run the example with a container instead. Leaving
// testcontainers-go and the Docker client out keeps a first `make demo`
// to a few modules.
func startContainer(t target) (string, func() error, error) {
	return "", nil, fmt.Errorf("no container fallback in this build: with Docker running, `go run -tags containers .` starts %s with testcontainers-go", t.image)
}
