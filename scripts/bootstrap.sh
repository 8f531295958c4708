#!/usr/bin/env bash
# Installs what `make up` and `make test` need and the machine lacks; `make build`, `make up`,
# `make test` and `.ci/run` call it first. On a fresh Debian (12 or later) it installs:
#
#   - Debian packages: a C toolchain and headers for librdkafka (built from the rdkafka crate's
#     bundled sources), unzip (scripts/duckdb.sh takes the prebuilt DuckDB out of its jar), Java 17+ and Maven for the Kafka broker resolved from Maven Central, curl,
#     Prometheus with promtool (started by `make up`, needed by the monitoring tests), Python with
#     venv, jq and openssl (the interoperability and Kafka Connect tests), Node.js 20+ with npm
#     (the AWS infrastructure tests), podman, runc and debootstrap (the container images and the
#     compose stack, tests/containers);
#   - the Python virtualenv of the interoperability and monitoring tests,
#     ~/.cache/tributary/venv, from tests/interop/requirements.txt (rebuilt when that changes),
#     with podman-compose from deploy/containers/requirements.txt.
#
# `make lint` needs cargo-deny too; scripts/cargo-deny.sh installs it when lint first runs (a
# 25-minute build on 2 cores that `make up` and `make test` do not need).
#
# It checks before it installs, so on a machine that has everything it does nothing and takes a
# fraction of a second; `apt-get update` runs only when a package is missing. It uses sudo when
# not root. When it cannot install without asking (not root, no passwordless sudo and no
# terminal to ask for a password on) it stops at once and prints the one command to run. Rust
# cannot be installed from here: when cargo is missing or too old it prints how to get it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
# The newest rust-version among the locked dependencies (uuid 1.29), above the workspace's own.
MIN_RUST=1.89
MIN_JAVA=17
MIN_NODE=20

say() { echo "bootstrap: $*" >&2; }
die() { echo "bootstrap: $*" >&2; exit 1; }

# "1.89" -> 189, "17.0.15" -> 1700 (major * 100 + minor), for comparisons.
version_number() {
  local major minor
  IFS=. read -r major minor _ <<< "$1"
  major="${major%%[!0-9]*}" minor="${minor%%[!0-9]*}"
  echo $((10#${major:-0} * 100 + 10#${minor:-0}))
}

if ! command -v dpkg-query > /dev/null 2>&1 || ! command -v apt-get > /dev/null 2>&1; then
  die "this script installs with apt (Debian, Ubuntu); elsewhere install by hand what README.md's Prerequisites list"
fi

# Debian packages that have no command of their own to look for, all asked in one dpkg-query.
# debian-archive-keyring: debootstrap checks the Debian archive with it (Ubuntu lacks it).
packages=(build-essential pkg-config libssl-dev zlib1g-dev ca-certificates python3-venv python3-pip
  debian-archive-keyring)
installed=$'\n'"$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${packages[@]}" 2> /dev/null \
  | awk '$2 ~ /^ii/ {print $1}' || true)"$'\n'
missing=()
for p in "${packages[@]}"; do
  [[ "$installed" == *$'\n'"$p"$'\n'* ]] || missing+=("$p")
done
# Commands, wherever they came from (a JDK from elsewhere, Prometheus from a tarball, ...).
need_command() { command -v "$1" > /dev/null 2>&1 || missing+=("$2"); }
need_command curl curl
need_command jq jq
need_command unzip unzip
need_command openssl openssl
need_command python3 python3
need_command java default-jre-headless
need_command mvn maven
need_command prometheus prometheus
need_command promtool prometheus
need_command node nodejs
need_command npm npm
need_command podman podman
need_command runc runc
need_command debootstrap debootstrap
# Each package once, in order.
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk 'NF && !seen[$0]++')

# How to run a command as root: directly, with sudo -n, or with sudo asking on the terminal.
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo > /dev/null 2>&1 && sudo -n true 2> /dev/null; then
  as_root=(sudo -n)
elif command -v sudo > /dev/null 2>&1 && [ -t 0 ]; then
  as_root=(sudo)
else
  as_root=(none)
fi
# The one line that runs "$1" as root, for a user to copy.
root_command() {
  if [ "$(id -u)" -eq 0 ]; then
    echo "$1"
  elif command -v sudo > /dev/null 2>&1; then
    echo "sudo sh -c '$1'"
  else
    echo "su -c '$1'"
  fi
}
nodesource="curl -fsSL https://deb.nodesource.com/setup_$MIN_NODE.x | bash - && apt-get install -y nodejs"
# Commands the user has to run, when something cannot be installed from here.
todo=()

# Debian 12's nodejs is 18, too old for the infrastructure tests: leave Node out of the apt list
# when apt only knows an older one (the version check below then says how to get it).
drop_old_node() {
  local candidate
  [[ " ${missing[*]} " == *" nodejs "* ]] || return 0
  candidate="$(apt-cache policy nodejs 2> /dev/null | sed -n 's/^ *Candidate: \([0-9]*\).*/\1/p')"
  if [ -n "$candidate" ] && [ "$candidate" -lt "$MIN_NODE" ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | grep -vx -e nodejs -e npm)
  fi
}

if [ ${#missing[@]} -gt 0 ] && [ "${as_root[0]:-}" = none ]; then
  drop_old_node
  say "missing: ${missing[*]}; cannot install without asking (not root, no passwordless sudo, no terminal)"
  [ ${#missing[@]} -eq 0 ] \
    || todo+=("$(root_command "apt-get update && apt-get install -y --no-install-recommends ${missing[*]}")")
elif [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}${as_root[0]:+ (with sudo)}"
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  drop_old_node
  if [ ${#missing[@]} -gt 0 ]; then
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  # Debian's package starts a Prometheus service on :9090, the port `make up` gives its own.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl > /dev/null 2>&1 \
    && systemctl is-active --quiet prometheus 2> /dev/null; then
    "${as_root[@]}" systemctl disable --now prometheus > /dev/null 2>&1 || true
    say "stopped and disabled Debian's prometheus service (make up runs its own on 127.0.0.1:9090)"
  fi
fi

# Versions of what was there before (apt's own are new enough).
if command -v java > /dev/null 2>&1; then
  java_version="$(java -version 2>&1 | sed -n 's/.*version "\([0-9][0-9._]*\).*/\1/p' | head -n 1)"
  case "$java_version" in 1.*) java_version="${java_version#1.}" ;; esac
  if [ "$(version_number "${java_version:-0}")" -lt $((MIN_JAVA * 100)) ]; then
    say "Kafka needs Java $MIN_JAVA+, found ${java_version:-an unknown version} at $(command -v java)"
    todo+=("$(root_command "apt-get install -y --no-install-recommends default-jre-headless")  # then put it first on PATH")
  fi
fi
if command -v node > /dev/null 2>&1 || [[ " ${missing[*]} " != *" nodejs "* ]]; then
  node_version="$(node --version 2> /dev/null || true)"
  node_version="${node_version#v}"
  if [ "$(version_number "${node_version:-0}")" -lt $((MIN_NODE * 100)) ]; then
    say "the infrastructure tests need Node.js $MIN_NODE+, found ${node_version:-none} (Debian 12 has 18)"
    todo+=("$(root_command "$nodesource")")
  fi
fi

# Rust: rustup's stable toolchain (rust-toolchain.toml), which nothing here can install.
rustup_command="curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y && . \"\$HOME/.cargo/env\""
if command -v cargo > /dev/null 2>&1; then
  rust_version="$(cd "$ROOT" && cargo --version 2> /dev/null | awk '{print $2}')"
  if [ "$(version_number "${rust_version:-0}")" -lt "$(version_number "$MIN_RUST")" ]; then
    say "Rust $MIN_RUST+ is needed, found cargo ${rust_version:-that does not run} at $(command -v cargo)"
    todo+=("$rustup_command")
  fi
elif [ -x "$HOME/.cargo/bin/cargo" ]; then
  say "cargo is in ~/.cargo/bin, which is not on this shell's PATH (a new login shell has it)"
  todo+=(". \"\$HOME/.cargo/env\"")
else
  say "Rust $MIN_RUST+ is needed (rustup's stable toolchain; Debian's cargo is older)"
  todo+=("$rustup_command")
fi

if [ ${#todo[@]} -gt 0 ]; then
  {
    echo "bootstrap: run this, then the make command again:"
    printf '  %s\n' "${todo[@]}"
  } >&2
  exit 1
fi

# The Python tools of the interoperability and monitoring tests, pinned.
venv="$CACHE/venv"
requirements="$ROOT/tests/interop/requirements.txt"
if ! cmp -s "$requirements" "$venv/.requirements" 2> /dev/null || [ ! -x "$venv/bin/pytest" ]; then
  say "installing the Python test tools into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$venv/.requirements"
fi
# podman-compose for docker-compose.yml under podman (deploy/containers/compose.sh).
containers_requirements="$ROOT/deploy/containers/requirements.txt"
if ! cmp -s "$containers_requirements" "$venv/.requirements-containers" 2> /dev/null || [ ! -x "$venv/bin/podman-compose" ]; then
  say "installing podman-compose into $venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$containers_requirements"
  cp "$containers_requirements" "$venv/.requirements-containers"
fi
