# syntax=docker/dockerfile:1
#
# The Spool server image: `spool` on distroless (glibc, no shell, no package manager), running
# as the non-root user 65532.
#
#   docker build -t spool:0.1.0 .
#   docker run --rm -p 50051:50051 -p 9090:9090 -v spool-data:/var/lib/spool spool:0.1.0
#
# Needs BuildKit (the default builder since Docker 23; `DOCKER_BUILDKIT=1` before that) for the
# cache mounts below. See docs/deploy.md.

# The Rust toolchain (1.89 or newer: Cargo.toml's rust-version). The full image brings the C
# compiler that the bundled SQLite needs; no protoc is needed (protox compiles the .proto files).
# Bookworm, like the runtime image below, so the binary links against the same glibc.
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
# The commit `spool --version` names: the context has no .git (.dockerignore), so pass it:
# docker build --build-arg SPOOL_GIT_COMMIT=$(git rev-parse --short HEAD) .
ARG SPOOL_GIT_COMMIT=unknown
ENV SPOOL_GIT_COMMIT=${SPOOL_GIT_COMMIT}
WORKDIR /src
# The whole repository but what .dockerignore leaves out (target/, .git, virtualenvs): Cargo
# reads the directories of the tests, examples and benches too, even when it builds only the
# binary.
COPY . .
# --locked: exactly the versions in Cargo.lock. The cache mounts keep downloaded crates and
# compiled dependencies between builds; the binary is copied out of the cached target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin spool \
 && install -D -m 0755 target/release/spool /out/spool \
 && install -d -m 0750 /out/data

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="spool" \
      org.opencontainers.image.description="A durable message-queue service with the queue model of Tencent Cloud CMQ, served over gRPC" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/spool /usr/local/bin/spool
COPY deploy/docker/spool.toml /etc/spool/spool.toml
# The data directory, owned by the runtime user so that a new named volume, which Docker fills
# from the image, is writable. The server writes nowhere else, so the root filesystem can be
# read-only (docker run --read-only, or readOnlyRootFilesystem in Kubernetes).
COPY --from=build --chown=65532:65532 /out/data /var/lib/spool
VOLUME ["/var/lib/spool"]
# Numeric, so Kubernetes' runAsNonRoot can check it (distroless' "nonroot").
USER 65532:65532
# gRPC (spool.v1.QueueService, health, reflection) and Prometheus metrics (/metrics).
EXPOSE 50051 9090
# Read by `spool serve --config`; a --config flag replaces it.
ENV SPOOL_CONFIG=/etc/spool/spool.toml
# SIGTERM (Docker's default stop signal) starts a graceful shutdown.
ENTRYPOINT ["/usr/local/bin/spool"]
CMD ["serve"]
