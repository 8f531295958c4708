#!/usr/bin/env bash
# cargo with the DuckDB this machine can have: the prebuilt library from Maven Central when
# scripts/duckdb.sh can fetch and verify one for it (minutes for a first build), else DuckDB
# compiled from the crate's bundled sources (`--features tributary-sink/bundled-duckdb`, about
# 25 minutes the first time on two cores). The Makefile and scripts/test.sh build through it.
#
#   scripts/cargo.sh build --release -p tributary-cli
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -gt 0 ] || { echo "usage: scripts/cargo.sh SUBCOMMAND [ARGS]" >&2; exit 2; }
if "$ROOT/scripts/duckdb.sh"; then
  exec cargo "$@"
fi
echo "cargo: compiling DuckDB from its bundled sources instead (about 25 minutes the first time)" >&2
subcommand="$1"
shift
exec cargo "$subcommand" --features tributary-sink/bundled-duckdb "$@"
