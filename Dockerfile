# syntax=docker/dockerfile:1
# The operator image: one static executable FROM scratch, with Debian's CA bundle and an
# /etc/passwd naming the non-root user 65532. No shell, no package manager, no libraries.
#
#   docker build -t nsapi-token-operator:0.1.0 .
#
# Without a container engine, scripts/build-image builds the same image with buildah: the same
# scripts/build-static and scripts/image-rootfs, and this file's final stage (which it reads from
# here, so keep its `COPY --from=build /rootfs/ /` line).

FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# The rust image is Debian bookworm with ca-certificates; image-rootfs copies its CA bundle.
RUN scripts/build-static --out /out/nsapi-token-operator \
 && scripts/image-rootfs /rootfs /out/nsapi-token-operator

FROM scratch
LABEL org.opencontainers.image.title="nsapi-token-operator" \
      org.opencontainers.image.description="Keeps a NetSapiens API OAuth2 Bearer token in a Kubernetes Secret, always valid" \
      org.opencontainers.image.source="https://github.com/nsapi-token-operator/nsapi-token-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /rootfs/ /
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/nsapi-token-operator"]
CMD ["run"]
