# Every rule of this package broken once: the checker must find each.
FROM golang:latest AS build
WORKDIR /src
ADD https://example.com/tool.tar.gz /tmp/
COPY . .
RUN go build -o /out/app ./cmd/app

FROM alpine AS tools

FROM debian:12-slim
COPY --from=build /out/app /app
USER nobody
ENTRYPOINT ["/app"]
