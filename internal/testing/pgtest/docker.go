package pgtest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ory/dockertest/v3"
	"github.com/ory/dockertest/v3/docker"
)

// Image is the PostgreSQL image used when a Docker engine is available.
const Image = "postgres"

// ImageTag pins the image's major version: 15, as the server binaries that
// Debian 12 ships for the local-binaries path.
const ImageTag = "15-alpine"

// StartDocker runs PostgreSQL in a container, removed again on Close.
// settings are as for Start.
func StartDocker(ctx context.Context, settings ...string) (*Server, error) {
	pool, err := dockertest.NewPool("")
	if err != nil {
		return nil, err
	}
	// The docker client alone is not enough: the engine must answer.
	ping := make(chan error, 1)
	go func() { ping <- pool.Client.Ping() }()
	select {
	case err := <-ping:
		if err != nil {
			return nil, fmt.Errorf("docker engine not answering: %w", err)
		}
	case <-time.After(3 * time.Second):
		return nil, errors.New("docker engine not answering")
	}

	res, err := pool.RunWithOptions(&dockertest.RunOptions{
		Repository: Image,
		Tag:        ImageTag,
		Env:        []string{"POSTGRES_HOST_AUTH_METHOD=trust"},
		Cmd:        append([]string{"postgres"}, serverArgs(settings)...),
		Labels:     map[string]string{"org.agynio.users.pgtest": "true"},
	}, func(hc *docker.HostConfig) {
		hc.AutoRemove = true
		hc.RestartPolicy = docker.RestartPolicy{Name: "no"}
	})
	if err != nil {
		return nil, fmt.Errorf("start container: %w", err)
	}

	url := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", res.GetHostPort("5432/tcp"))
	if err := waitReady(ctx, url, nil); err != nil {
		pool.Purge(res) //nolint:errcheck // best effort on a failed start
		return nil, err
	}
	return &Server{URL: url, Backend: "docker", Where: "container " + res.Container.ID, stop: func() error { return pool.Purge(res) }}, nil
}
