#!/usr/bin/env bash
# Runs cargo-deny (deny.toml) with the pinned version, installing it first when it is missing:
# `make lint` runs `scripts/cargo-deny.sh check licenses bans sources`, the GitHub Actions
# workflow also `check advisories` (which needs the RustSec database from GitHub).
#
# The binary goes to ~/.cache/tributary/bin (TRIBUTARY_CACHE), which CI caches, so the build
# happens once per machine. cargo-deny's own release profile (fat LTO, one codegen unit) took
# 26.5 minutes on this project's 2-core machines; built with LTO off, 16 codegen units and
# opt-level 1 it took 8 minutes (4.7 CPU-minutes) on the same loaded machine, and checks this
# workspace in seconds all the same (measured 2026-12-05).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
VERSION=0.20.2
BIN="$CACHE/bin/cargo-deny"

if [ ! -x "$BIN" ] || [ "$("$BIN" --version 2> /dev/null | awk '{print $2}')" != "$VERSION" ]; then
  echo "cargo-deny: installing cargo-deny $VERSION into $CACHE/bin (once per machine; about 5-8 minutes on 2 cores)" >&2
  # A throwaway target directory: the workspace's shared one is for the workspace's own builds.
  env -u CARGO_TARGET_DIR CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 cargo install --quiet --locked cargo-deny --version "$VERSION" --root "$CACHE"
fi
cd "$ROOT"
exec "$BIN" deny --log-level error "$@"
