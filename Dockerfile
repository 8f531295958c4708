# syntax=docker/dockerfile:1
# The `tributary` binary in a small Debian image. Build from the repository root:
#
#   docker build -t tributary:local .
#   docker run --rm tributary:local --help
#
# The cache mounts need BuildKit (the default builder of current Docker releases).

FROM rust:1-bookworm AS builder
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
# The target directory is a cache mount, so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tributary-cli \
 && cp target/release/tributary /usr/local/bin/tributary

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 zlib1g ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin tributary
COPY --from=builder /usr/local/bin/tributary /usr/local/bin/tributary
# `tributary` reads ./tributary.toml when it exists: mount one at /etc/tributary/tributary.toml,
# or configure with TRIBUTARY_* environment variables.
WORKDIR /etc/tributary
USER tributary
# Inside a container the gateway must listen on all interfaces to be reachable.
ENV TRIBUTARY_GATEWAY__LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["tributary"]
CMD ["gateway"]
