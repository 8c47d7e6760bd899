//go:build containers

package exampledb

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tcmariadb "github.com/testcontainers/testcontainers-go/modules/mariadb"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
)

const (
	dockerTimeout    = 2 * time.Second
	containerTimeout = 5 * time.Minute
)

var (
	dockerOnce sync.Once
	dockerErr  error
)

// dockerEngine reports whether a Docker engine answers, as testcontainers
// finds it. It gives up after two seconds and asks only once.
func dockerEngine() error {
	dockerOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			cli, err := testcontainers.NewDockerClientWithOpts(ctx)
			if err != nil {
				done <- err
				return
			}
			defer cli.Close()
			_, err = cli.Ping(ctx, client.PingOptions{})
			done <- err
		}()
		select {
		case dockerErr = <-done:
		case <-ctx.Done():
			dockerErr = ctx.Err()
		}
		if dockerErr != nil {
			dockerErr = fmt.Errorf("no Docker engine for testcontainers (DOCKER_HOST, /var/run/docker.sock, Docker context): %w", dockerErr)
		}
	})
	return dockerErr
}

// startContainer starts a container for t when a Docker engine answers. It
// returns the container's DSN and, when a container was created (even one
// that failed to start), the function that removes it.
func startContainer(t target) (string, func() error, error) {
	if err := dockerEngine(); err != nil {
		return "", nil, err
	}
	fmt.Printf("[%s] starting a %s container with testcontainers-go\n", t.label, t.image)
	ctx, cancel := context.WithTimeout(context.Background(), containerTimeout)
	defer cancel()
	var (
		dsn string
		ctr testcontainers.Container
		err error
	)
	switch t.dialect {
	case MySQL:
		var c *tcmariadb.MariaDBContainer
		c, err = tcmariadb.Run(ctx, t.image,
			tcmariadb.WithDatabase("test"), tcmariadb.WithUsername("root"), tcmariadb.WithPassword(""))
		if c != nil {
			ctr = c
			if err == nil {
				dsn, err = c.ConnectionString(ctx)
			}
		}
	default:
		var c *tcpostgres.PostgresContainer
		c, err = tcpostgres.Run(ctx, t.image,
			tcpostgres.WithDatabase("test"), tcpostgres.WithUsername("postgres"),
			tcpostgres.WithPassword("dlock"), tcpostgres.BasicWaitStrategies())
		if c != nil {
			ctr = c
			if err == nil {
				dsn, err = c.ConnectionString(ctx, "sslmode=disable")
			}
		}
	}
	var stop func() error
	if ctr != nil {
		stop = func() error { return testcontainers.TerminateContainer(ctr) }
	}
	if err != nil {
		return "", stop, fmt.Errorf("start %s container: %w", t.image, err)
	}
	return dsn, stop, nil
}
