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
# The virtualenv (scripts/venv.sh; MEDVAULT_API_PYTHON names another python3).
venv="$(MEDVAULT_PYTHON="${MEDVAULT_API_PYTHON:-python3}" \
    "$here/../../scripts/venv.sh" "$cache" "$here/requirements.txt")"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"

seed="${SCHEMATHESIS_SEED:-$RANDOM$RANDOM}"
echo "== schemathesis against $base/openapi.json (SCHEMATHESIS_SEED=$seed)"
cd "$cache"
"$venv/bin/st" run "$base/openapi.json" \
    --checks not_a_server_error,response_schema_conformance \
    --max-time "${SCHEMATHESIS_SECONDS:-60}" \
    --workers 2 \
    --seed "$seed" \
    --no-color
