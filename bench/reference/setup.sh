#!/usr/bin/env bash
# Creates (or reuses) the reference service's venv under ~/.cache/tributary with the pinned
# requirements, and prints its path. Used by bench/run.sh.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}/bench-reference-venv"
STAMP="$VENV/.requirements.sha256"
want="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/uvicorn" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q -r "$HERE/requirements.txt" >&2
  echo "$want" > "$STAMP"
fi
echo "$VENV"
