# Passes this package's rules but not docker build --check.
FROM golang:1.26.8-bookworm as build
ENV SETTING=$UNDEFINED_SETTING
RUN echo "$SETTING" > /setting

FROM scratch
COPY --from=build /setting /setting
USER 65532
ENTRYPOINT /bin/true
