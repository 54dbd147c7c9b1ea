# syntax=docker/dockerfile:1
# The operator image: one static executable on a distroless base (no shell, no package manager),
# running as the numeric non-root user 65532.
#
#   docker build -t nsapi-token-operator:0.1.0 .
#
# CI has no container engine: it runs the same scripts/build-static as the build stage below, so
# the binary this image ships is built and checked (static, runs) on every CI run.

FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/build-static --out /out/nsapi-token-operator

# distroless/static: CA certificates, /etc/passwd with "nonroot" (65532), /etc/nsswitch.conf, tzdata.
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="nsapi-token-operator" \
      org.opencontainers.image.description="Keeps a NetSapiens API OAuth2 Bearer token in a Kubernetes Secret, always valid" \
      org.opencontainers.image.source="https://github.com/nsapi-token-operator/nsapi-token-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/nsapi-token-operator /nsapi-token-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/nsapi-token-operator"]
CMD ["run"]
