#!/usr/bin/env bash
# Install (or reuse) the virtualenv that holds the pinned Python clients and carebundle, and
# print its path on stdout. Shared by tests/clients/run.sh and scripts/bench-data.sh.
#
#   tests/clients/python/venv.sh CACHE_DIR
#
# The virtualenv is CACHE_DIR/venv-pyX.Y, keyed by the interpreter's version, installed from
# the hashed pins in requirements.txt (--require-hashes) beside this file, and reinstalled
# when they change. CACHE_DIR/.lock serializes installers sharing the cache (hold no flock on
# that file while calling this). Progress goes to stderr.
#
# Needs python3 (3.10 or later, with venv; MEDVAULT_CLIENTS_PYTHON names another), flock and
# sha256sum on PATH, and PyPI on first use.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${1:?usage: venv.sh CACHE_DIR}"
python="${MEDVAULT_CLIENTS_PYTHON:-python3}"

command -v "$python" >/dev/null || { echo "venv.sh: $python is not on PATH" >&2; exit 1; }
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"

exec 9>"$cache/.lock"
flock 9

pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
venv="$cache/venv-py$pyver"
want="$(sha256sum "$here/requirements.txt" | sha256sum | cut -c1-16)"
if [[ ! -x "$venv/bin/python" || "$(cat "$venv/.installed" 2>/dev/null)" != "$want" ]]; then
    echo "== installing Python clients into $venv" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --require-hashes -r "$here/requirements.txt" >&2
    echo "$want" >"$venv/.installed"
fi
flock -u 9
echo "$venv"
