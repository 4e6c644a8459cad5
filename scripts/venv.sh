#!/usr/bin/env bash
# Install (or reuse) a virtualenv from a pinned requirements file and print its path on
# stdout. Shared by tests/clients/run.sh, tests/api/run.sh and scripts/bench-data.sh.
#
#   scripts/venv.sh CACHE_DIR REQUIREMENTS
#
# The virtualenv is CACHE_DIR/venv-pyX.Y, keyed by the interpreter's version, and is
# reinstalled when REQUIREMENTS changes: one CACHE_DIR holds the venv of one requirements
# file (callers use their own). A requirements file with hashes is installed with
# --require-hashes. CACHE_DIR/.lock serializes installers sharing the cache (hold no flock on
# that file while calling this). Progress goes to stderr.
#
# Needs python3 (3.10 or later, with venv; MEDVAULT_PYTHON names another), flock and
# sha256sum on PATH, and PyPI on first use.
set -euo pipefail

cache="${1:?usage: venv.sh CACHE_DIR REQUIREMENTS}"
requirements="${2:?usage: venv.sh CACHE_DIR REQUIREMENTS}"
python="${MEDVAULT_PYTHON:-python3}"

command -v "$python" >/dev/null || { echo "venv.sh: $python is not on PATH" >&2; exit 1; }
[[ -f "$requirements" ]] || { echo "venv.sh: $requirements is not a file" >&2; exit 1; }
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"

exec 9>"$cache/.lock"
flock 9

pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
venv="$cache/venv-py$pyver"
want="$(sha256sum "$requirements" | cut -c1-16)"
hashes=()
if grep -q -- '--hash=' "$requirements"; then
    hashes=(--require-hashes)
fi
if [[ ! -x "$venv/bin/python" || "$(cat "$venv/.installed" 2>/dev/null)" != "$want" ]]; then
    echo "== installing $(basename "$(dirname "$requirements")")/$(basename "$requirements") into $venv" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        ${hashes[@]+"${hashes[@]}"} -r "$requirements" >&2
    echo "$want" >"$venv/.installed"
fi
flock -u 9
echo "$venv"
