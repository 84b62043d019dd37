# The users image: one static binary on distroless, non-root. The same image
# runs "users serve" (the default) and "users migrate up".
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=v1.2.3 --build-arg COMMIT=$(git rev-parse HEAD) \
#     -t ghcr.io/agynio/users:1.2.3 --push .
#
# COMMIT is stamped into the binary ("users version", the metrics'
# users_build_info) because Go cannot read it here: .git is not in the
# build context.
#
# Base images are pinned by tag; tools/deploy/dockerfile checks that, and the
# rest of this file's shape, in CI (there is no Docker engine there).

# The compiler runs on the builder's own platform and cross-compiles, so an
# arm64 image needs no emulation: Go needs none, and CGO is off.
FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm AS build
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
# Generated code (internal/gen, internal/db) is committed, and the
# migrations are embedded from sql/: no protoc, buf or sqlc here.
COPY cmd/ cmd/
COPY internal/ internal/
COPY sql/ sql/
ARG TARGETOS TARGETARCH
ARG VERSION=dev
ARG COMMIT
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath \
      -ldflags "-s -w -X github.com/agynio/users/internal/buildinfo.Version=$VERSION \
        -X github.com/agynio/users/internal/buildinfo.Commit=$COMMIT" \
      -o /out/users ./cmd/users

# The end-to-end tests of a deployed service (e2e/), compiled into a binary
# that runs as a Job in the cluster (devspace.yaml). Only built when asked
# for with --target e2e: the release builds the last stage alone.
FROM build AS e2e-build
COPY e2e/ e2e/
ARG TARGETOS TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go test -c -trimpath -tags e2e -o /out/e2e.test ./e2e

FROM gcr.io/distroless/static-debian12:nonroot AS e2e
COPY --from=e2e-build /out/e2e.test /e2e.test
USER 65532:65532
ENTRYPOINT ["/e2e.test"]
CMD ["-test.v"]

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG COMMIT
LABEL org.opencontainers.image.source="https://github.com/agynio/users" \
      org.opencontainers.image.title="users" \
      org.opencontainers.image.description="The platform's users service (agynio.api.users.v1 over gRPC)" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$COMMIT"
COPY --from=build /out/users /users
# distroless's nonroot user, by number, so that Kubernetes' runAsNonRoot can
# verify it without reading /etc/passwd.
USER 65532:65532
# gRPC, and the admin HTTP listener (health and metrics).
EXPOSE 50051 8080
ENTRYPOINT ["/users"]
CMD ["serve"]
