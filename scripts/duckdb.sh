#!/usr/bin/env bash
# A prebuilt DuckDB for the sink, so that a first build does not compile DuckDB's C++ sources
# (about 25 minutes in release on 2 cores). The library comes from Maven Central: DuckDB's JDBC
# driver ships DuckDB as one native library per platform, and that library exports DuckDB's
# whole C API, the one the `duckdb` crate calls. It is the same DuckDB release as the crate
# pins (VERSION below against crates/sink/Cargo.toml), checked by the jar's SHA-256 and by the
# version the library reports.
#
#   scripts/duckdb.sh          fetch and verify it once (~80 MB download), link it as .duckdb/
#                              in the checkout, where .cargo/config.toml points DUCKDB_LIB_DIR
#   scripts/duckdb.sh check    exit 0 when .duckdb/ holds a verified library, else 1
#
# Exits 1 with the reason where no prebuilt library fits (another OS or CPU, no network):
# scripts/cargo.sh then builds with the bundled DuckDB instead (--features
# tributary-sink/bundled-duckdb), which works anywhere but takes the 25 minutes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The duckdb crate =1.20000.1 bundles DuckDB v2.0.0 (source id d54cbbe3df); the JDBC driver
# 2.0.0.1 is built from that same release.
VERSION=2.0.0.1
DUCKDB_RELEASE=v2.0.0
JAR_SHA256=6cb8b0e0fc51b2e45aead2d2c1e1fd09dd10267db2966e69aaab0de67319f826
MAVEN="${TRIBUTARY_MAVEN_URL:-https://repo1.maven.org/maven2}"
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}/duckdb/$VERSION"
LINK="$ROOT/.duckdb"

say() { echo "duckdb: $*" >&2; }

# The JDBC jar's name for this machine's library, or nothing where there is none.
platform() {
  [ "$(uname -s)" = Linux ] || return 1
  case "$(uname -m)" in
    x86_64) echo linux_amd64 ;;
    aarch64 | arm64) echo linux_arm64 ;;
    *) return 1 ;;
  esac
}

# The library file in the cache (named as its SONAME, which is what the loader looks for).
library() { echo "$CACHE/libduckdb_java.so_$1"; }

verified() {
  local lib
  lib="$(library "$1")"
  [ -f "$lib" ] && [ -L "$CACHE/libduckdb.so" ] && [ -f "$CACHE/.verified" ] \
    && [ "$(cat "$CACHE/.verified")" = "$JAR_SHA256" ]
}

fetch() {
  local arch="$1" tmp ok=0
  mkdir -p "$CACHE"
  tmp="$(mktemp -d "$CACHE/.fetch.XXXXXX")"
  fetch_into "$arch" "$tmp" || ok=1
  rm -rf "$tmp"
  return "$ok"
}

# Downloads the jar into folder $2 and, when it is the one expected, keeps its library.
fetch_into() {
  local arch="$1" tmp="$2" jar
  jar="$tmp/duckdb_jdbc-$VERSION.jar"
  say "fetching DuckDB $DUCKDB_RELEASE (org.duckdb:duckdb_jdbc:$VERSION) from Maven Central"
  if ! curl -fsSL --retry 3 --connect-timeout 20 --max-time 600 -o "$jar" \
    "$MAVEN/org/duckdb/duckdb_jdbc/$VERSION/duckdb_jdbc-$VERSION.jar"; then
    say "could not download the jar"
    return 1
  fi
  if [ "$(sha256sum "$jar" | cut -d' ' -f1)" != "$JAR_SHA256" ]; then
    say "the jar's SHA-256 is not $JAR_SHA256: refusing it"
    return 1
  fi
  (cd "$tmp" && unzip -q -o "$jar" "libduckdb_java.so_$arch")
  # The C API the crate calls, and the release the crate's bindings were made from.
  if ! grep -qa "$DUCKDB_RELEASE" "$tmp/libduckdb_java.so_$arch" \
    || ! grep -qa duckdb_appender_create "$tmp/libduckdb_java.so_$arch"; then
    say "the library in the jar is not DuckDB $DUCKDB_RELEASE with its C API"
    return 1
  fi
  mv "$tmp/libduckdb_java.so_$arch" "$(library "$arch")"
  ln -sfn "libduckdb_java.so_$arch" "$CACHE/libduckdb.so"
  echo "$JAR_SHA256" > "$CACHE/.verified"
}

main() {
  local arch
  if ! arch="$(platform)"; then
    say "no prebuilt DuckDB for $(uname -s) $(uname -m); the bundled build is used"
    exit 1
  fi
  if [ "${1:-}" = check ]; then
    verified "$arch" && [ "$(readlink "$LINK" 2> /dev/null)" = "$CACHE" ]
    exit
  fi
  verified "$arch" || fetch "$arch" || exit 1
  [ "$(readlink "$LINK" 2> /dev/null)" = "$CACHE" ] || ln -sfn "$CACHE" "$LINK"
}

main "$@"
