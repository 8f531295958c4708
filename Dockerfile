# syntax=docker/dockerfile:1
# The `tributary` binary (every subcommand) in a small Debian image. Two ways to build it, from
# the same file:
#
#   release (the default, GitHub Actions): compiles the binary in a Rust image, from the
#   repository root as context:
#     docker build -t tributary:local .
#   prebuilt (here, deploy/containers/images.sh): copies the binary `make` already built; the
#   context is a directory holding only that binary, the base the locally bootstrapped Debian:
#     podman --runtime runc build --format docker --target prebuilt \
#       --build-arg BASE_IMAGE=localhost/debian:bookworm-local -f Dockerfile CONTEXT
#
# The base images are build arguments pinned by digest; Dependabot (docker) or a hand update of
# both lines moves them. The cache mounts of the release build need BuildKit.
ARG BASE_IMAGE=debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251
ARG RUST_IMAGE=rust:1-bookworm@sha256:93ce27a88655056a51dbdd8f5f2d7ddc071c7b0070fb288a37b5a285fc83971e

# Everything but the binary: both targets below add only /usr/local/bin/tributary to it.
FROM ${BASE_IMAGE} AS runtime
# curl is for the health check; libssl3 and zlib1g are what the binary links.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 zlib1g ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/tributary --create-home --shell /usr/sbin/nologin tributary
LABEL org.opencontainers.image.title="tributary" \
      org.opencontainers.image.description="Tributary: gateway, registry, processor, sink and tools in one binary" \
      org.opencontainers.image.source="https://github.com/tributary/tributary" \
      org.opencontainers.image.licenses="Apache-2.0"
# `tributary` reads ./tributary.toml when it exists: mount one at /etc/tributary/tributary.toml,
# or configure with TRIBUTARY_* environment variables. The sink's DuckDB file lives in the
# tributary user's home (a volume in docker-compose.yml).
WORKDIR /etc/tributary
ENV TRIBUTARY_GATEWAY__LISTEN=0.0.0.0:8080 \
    TRIBUTARY_SINK__DATABASE=/var/lib/tributary/tributary.duckdb
USER tributary
EXPOSE 8080
# The gateway's readiness by default; docker-compose.yml gives each other service its own URL
# (registry /subjects on 8081, processor /health on 8082, sink /health on 8084).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=6 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:8080/api/v1/health || exit 1
ENTRYPOINT ["tributary"]
CMD ["gateway"]

# The binary `make` built (deploy/containers/images.sh strips its line tables) and the prebuilt
# DuckDB library it links, which it finds next to itself: the folder bin/ of the build context.
FROM runtime AS prebuilt
COPY bin/ /usr/local/bin/

FROM ${RUST_IMAGE} AS builder
# librdkafka is compiled from source by the rdkafka crate: it needs a C toolchain, pkg-config and
# the OpenSSL and zlib headers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only the workspace is copied (see .dockerignore). rust-toolchain.toml is left out on purpose, so
# the image's own stable toolchain builds without downloading another one.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
# The target directory is a cache mount, so the binary is copied out in the same step. DuckDB is
# compiled into the binary from the duckdb crate's bundled sources (no library to ship beside it).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tributary-cli --features tributary-sink/bundled-duckdb \
 && strip --strip-debug -o /usr/local/bin/tributary target/release/tributary

# The default target: the binary compiled above.
FROM runtime AS release
COPY --from=builder /usr/local/bin/tributary /usr/local/bin/tributary
