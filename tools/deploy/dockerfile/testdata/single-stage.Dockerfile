# One stage, running as root.
FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm
ARG TARGETOS TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -o /app .
USER 0:0
ENTRYPOINT ["/app"]
