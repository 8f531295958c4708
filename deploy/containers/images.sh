#!/usr/bin/env bash
# Builds Tributary's three container images here, with podman, from the Dockerfiles GitHub
# Actions builds (.github/workflows/release.yml):
#
#   tributary:local          Dockerfile, target `prebuilt`: the binary `make` built
#   tributary-kafka:local    deploy/kafka/Dockerfile: Debian's JRE and the Kafka of kafka.sh
#   tributary-connect:local  deploy/connect/Dockerfile: Connect and the Snowflake sink plugin
#
# No registry can be reached here, so the base image is made with debootstrap (Debian bookworm,
# minbase) and imported as localhost/debian:bookworm-local; the root file system is cached as a
# tarball, so a later run (or a machine whose podman storage was wiped) imports it in seconds.
#
#   images.sh base      make or import the base image only
#   images.sh build     the base, then the three images (the default)
#   images.sh env       print the resolved settings
#
# Settings (environment):
#   TRIBUTARY_CACHE     cache root (default ~/.cache/tributary); the base tarball is under
#                       $TRIBUTARY_CACHE/containers
#   CARGO_TARGET_DIR    where `make` built the binary (default $TRIBUTARY_CACHE/target)
#   SNOWFLAKE_CONNECTOR_VERSION  for the Connect image (default: 4.1.0 where Maven Central has
#                       it, else 2.5.0)
#   DEBIAN_MIRROR       mirror for debootstrap (default: the first deb.debian.org-style URI
#                       apt's sources name, else http://deb.debian.org/debian)
#   PODMAN              the podman command (default: podman --runtime runc; crun fails here)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
DIR="$CACHE/containers"
TARGET="${CARGO_TARGET_DIR:-$CACHE/target}"
BINARY="$TARGET/release/tributary"
BASE=localhost/debian:bookworm-local
BASE_TAR="$DIR/debian-bookworm-minbase.tar"
read -r -a PODMAN <<< "${PODMAN:-podman --runtime runc}"
# What a build needs here: limits runc can set, and the host's network for apt and Maven.
BUILD_FLAGS=(--format docker --network host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
  --build-arg "BASE_IMAGE=$BASE")

log() { printf 'images: %s\n' "$*" >&2; }

mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local uri
  uri="$(grep -hoE '(URIs:|^deb) *https?://[^ ]*/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
    | grep -v security | head -n 1 | grep -oE 'https?://[^ ]*' || true)"
  echo "${uri:-http://deb.debian.org/debian}"
}

# The Snowflake connector version for the Connect image: SNOWFLAKE_CONNECTOR_VERSION, else the
# Dockerfile's 4.1.0 where Maven Central serves it, else 2.5.0 (the newest the Maven Central this
# workplace reaches has, as tests/connect/test_connect.sh does).
snowflake_version() {
  if [ -n "${SNOWFLAKE_CONNECTOR_VERSION:-}" ]; then echo "$SNOWFLAKE_CONNECTOR_VERSION"; return; fi
  local v
  v="$(sed -n 's/^ARG SNOWFLAKE_CONNECTOR_VERSION=//p' "$ROOT/deploy/connect/Dockerfile")"
  if curl -fsI -m 20 "https://repo.maven.apache.org/maven2/com/snowflake/snowflake-kafka-connector/$v/snowflake-kafka-connector-$v.pom" >/dev/null 2>&1; then
    SNOWFLAKE_CONNECTOR_VERSION="$v"
  else
    log "Maven Central serves no snowflake-kafka-connector $v here: the Connect image gets 2.5.0"
    SNOWFLAKE_CONNECTOR_VERSION=2.5.0
  fi
  echo "$SNOWFLAKE_CONNECTOR_VERSION"
}

base() {
  if "${PODMAN[@]}" image exists "$BASE"; then return 0; fi
  if [ ! -f "$BASE_TAR" ]; then
    command -v debootstrap >/dev/null || { log "debootstrap is required (scripts/bootstrap.sh installs it)"; exit 1; }
    [ "$(id -u)" -eq 0 ] || { log "debootstrap needs root"; exit 1; }
    local work
    mkdir -p "$DIR"
    work="$(mktemp -d "$DIR/debootstrap.XXXXXX")"
    log "bootstrapping Debian bookworm (minbase) from $(mirror) into $work (about 3 minutes)"
    if ! debootstrap --variant=minbase bookworm "$work/root" "$(mirror)" > "$work.log" 2>&1; then
      tail -n 20 "$work.log" >&2
      rm -rf "$work"
      log "debootstrap failed; see $work.log"
      exit 1
    fi
    # apt in the image gets the same mirror; no caches or logs in the layer.
    rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
    tar --numeric-owner -C "$work/root" -cf "$BASE_TAR.tmp" .
    mv "$BASE_TAR.tmp" "$BASE_TAR"
    rm -rf "$work" "$work.log"
  fi
  log "importing $BASE_TAR as $BASE"
  local certs=(/usr/local/share/ca-certificates/*.crt)
  if [ ! -e "${certs[0]}" ]; then
    "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' "$BASE_TAR" "$BASE" >/dev/null
    return 0
  fi
  # This machine's own certificate authorities (a proxy that inspects TLS, for one) go into the
  # local base, so that Maven and curl in the images trust what the host trusts: the images'
  # apt-get install ca-certificates (and ca-certificates-java) adds them to the trust stores.
  # Docker Hub's base on GitHub has none.
  "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' "$BASE_TAR" "$BASE-debootstrap" >/dev/null
  local ctx
  ctx="$(mktemp -d)"
  cp "${certs[@]}" "$ctx/"
  printf 'FROM %s\nCOPY *.crt /usr/local/share/ca-certificates/\n' "$BASE-debootstrap" > "$ctx/Containerfile"
  "${PODMAN[@]}" build --format docker --network none -t "$BASE" "$ctx" >/dev/null
  rm -rf "$ctx"
  log "added ${#certs[@]} certificate authorities of /usr/local/share/ca-certificates to $BASE"
}

build() {
  base
  [ -x "$BINARY" ] || { log "no binary at $BINARY: run 'make build' first (or set CARGO_TARGET_DIR)"; exit 1; }
  local ctx
  ctx="$(mktemp -d)"
  trap 'rm -rf "$ctx"' RETURN
  # Without its line tables; the release build strips too. Beside it, the prebuilt DuckDB
  # library it was linked with (scripts/duckdb.sh), which it looks for next to itself first;
  # none when DuckDB was compiled in.
  mkdir "$ctx/bin"
  strip --strip-debug -o "$ctx/bin/tributary" "$BINARY" 2>/dev/null || cp "$BINARY" "$ctx/bin/tributary"
  ldd "$BINARY" | awk '/libduckdb/ && $3 ~ /^\// {print $3}' | while read -r lib; do
    cp "$lib" "$ctx/bin/"
  done
  log "building tributary:local (the binary at $BINARY)"
  "${PODMAN[@]}" build "${BUILD_FLAGS[@]}" --target prebuilt -f "$ROOT/Dockerfile" -t tributary:local "$ctx"
  log "building tributary-kafka:local"
  "${PODMAN[@]}" build "${BUILD_FLAGS[@]}" -f "$ROOT/deploy/kafka/Dockerfile" -t tributary-kafka:local "$ROOT/deploy"
  local sf
  sf="$(snowflake_version)"
  log "building tributary-connect:local (Snowflake connector $sf)"
  "${PODMAN[@]}" build "${BUILD_FLAGS[@]}" --build-arg "SNOWFLAKE_CONNECTOR_VERSION=$sf" -f "$ROOT/deploy/connect/Dockerfile" -t tributary-connect:local "$ROOT/deploy"
  log "built tributary:local, tributary-kafka:local, tributary-connect:local"
}

cmd="${1:-build}"
case "$cmd" in
  base) base ;;
  build) build ;;
  env) printf 'BASE_IMAGE=%s\nBASE_TAR=%s\nBINARY=%s\nDEBIAN_MIRROR=%s\nPODMAN=%s\n' \
    "$BASE" "$BASE_TAR" "$BINARY" "$(mirror)" "${PODMAN[*]}" ;;
  *) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
