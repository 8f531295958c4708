#!/usr/bin/env bash
# Runs cargo-deny (deny.toml) with the pinned version, installing it first when it is missing:
# `make lint` runs `scripts/cargo-deny.sh check licenses bans sources`, the GitHub Actions
# workflow also `check advisories` (which needs the RustSec database from GitHub).
#
# The binary goes to ~/.cache/tributary/bin (TRIBUTARY_CACHE), which CI caches, so the build
# happens once per machine: `cargo install --locked` of cargo-deny took 26.5 minutes on this
# project's 2-core machines (measured 2026-12-05, sharing the cores with another build).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
VERSION=0.20.2
BIN="$CACHE/bin/cargo-deny"

if [ ! -x "$BIN" ] || [ "$("$BIN" --version 2> /dev/null | awk '{print $2}')" != "$VERSION" ]; then
  echo "cargo-deny: installing cargo-deny $VERSION into $CACHE/bin (once per machine; about 25 minutes on 2 cores)" >&2
  # A throwaway target directory: the workspace's shared one is for the workspace's own builds.
  env -u CARGO_TARGET_DIR cargo install --quiet --locked cargo-deny --version "$VERSION" --root "$CACHE"
fi
cd "$ROOT"
exec "$BIN" deny --log-level error "$@"
