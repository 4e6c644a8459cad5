#!/usr/bin/env bash
# Property-based API testing of a running medvault with schemathesis: requests generated
# from the server's own OpenAPI document (/openapi.json), checked for no server errors and
# for answers that match the documented schemas.
#
#   tests/api/run.sh BASE_URL [CACHE_DIR]
#
# BASE_URL is the server's root, e.g. http://127.0.0.1:8200 (serve --dev, so the FHIR
# interactions are reached without a token). CACHE_DIR (default: target/api-cache at the
# repository root) keeps the virtualenv between runs; it is reinstalled when
# requirements.txt changes. SCHEMATHESIS_SECONDS (default 60) is the time budget,
# SCHEMATHESIS_SEED the seed (default: random, printed so that a failure can be replayed).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
base="${1:?usage: run.sh BASE_URL [CACHE_DIR]}"
cache="${2:-$here/../../target/api-cache}"
python="${MEDVAULT_API_PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "run.sh: $python is not on PATH" >&2; exit 1; }
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
exec 9>"$cache/.lock"
flock 9
pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
venv="$cache/venv-py$pyver"
want="$(sha256sum "$here/requirements.txt" | cut -c1-16)"
if [[ ! -x "$venv/bin/st" || "$(cat "$venv/.installed" 2>/dev/null)" != "$want" ]]; then
    echo "== installing schemathesis into $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        -r "$here/requirements.txt"
    echo "$want" >"$venv/.installed"
fi
flock -u 9

seed="${SCHEMATHESIS_SEED:-$RANDOM$RANDOM}"
echo "== schemathesis against $base/openapi.json (SCHEMATHESIS_SEED=$seed)"
cd "$cache"
"$venv/bin/st" run "$base/openapi.json" \
    --checks not_a_server_error,response_schema_conformance \
    --max-time "${SCHEMATHESIS_SECONDS:-60}" \
    --workers 2 \
    --seed "$seed" \
    --no-color
