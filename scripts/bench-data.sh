#!/usr/bin/env bash
# Generate the benchmark data set: carebundle transaction Bundles, one synthetic patient each,
# for the ingest benchmarks (scripts/bench-medplum.sh for the Medplum peer figure; medvault
# ingests the same files through its own transaction path).
#
#   scripts/bench-data.sh OUT_DIR [COUNT] [SEED]
#
# OUT_DIR receives COUNT Bundles (default 240) named mixed-SEED-NNNN.json, generated with
# `carebundle generate --profile mixed --sex mixed --age-range 30-85` (a cohort drawn by
# prevalence: healthy 50%, hypertension 30%, type 2 diabetes 15%, CKD stage 3 5%; all lab
# panels and vital signs). A Bundle holds 42 to 50 resources (Patient, Practitioner, Encounter, lab and
# vital-sign Observations, DiagnosticReports, Conditions, MedicationRequests, sometimes an
# AllergyIntolerance), about 45 on average, so the default 240 Bundles make about 10,800
# resources. Every entry is a POST with a urn:uuid fullUrl, and references between the
# entries are those urn:uuids. SEED (default 42) picks the data; the same seed and count give
# the same bytes. OUT_DIR must be empty or absent. Prints the number of Bundles and resources
# at the end.
#
# carebundle comes from the pinned, hashed tests/clients/python/requirements.txt, in the
# virtualenv that tests/clients/run.sh uses: CACHE_DIR/venv-pyX.Y, with CACHE_DIR
# $MEDVAULT_CLIENTS_CACHE or else target/clients-cache at the repository root (see
# scripts/venv.sh). Nothing is written inside the source tree except there.
#
# Needs python3 (3.10 or later, with venv; MEDVAULT_CLIENTS_PYTHON names another), flock and
# sha256sum on PATH, and PyPI on first use.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:?usage: bench-data.sh OUT_DIR [COUNT] [SEED]}"
count="${2:-240}"
seed="${3:-42}"
cache="${MEDVAULT_CLIENTS_CACHE:-$root/target/clients-cache}"

[[ "$count" =~ ^[1-9][0-9]*$ ]] || { echo "bench-data.sh: COUNT must be a positive integer" >&2; exit 2; }
[[ "$seed" =~ ^[0-9]+$ ]] || { echo "bench-data.sh: SEED must be a non-negative integer" >&2; exit 2; }
if [[ -e "$out" ]] && [[ -n "$(ls -A "$out")" ]]; then
    echo "bench-data.sh: $out is not empty" >&2
    exit 2
fi

venv="$(MEDVAULT_PYTHON="${MEDVAULT_CLIENTS_PYTHON:-python3}" \
    "$root/scripts/venv.sh" "$cache" "$root/tests/clients/python/requirements.txt")"

echo "== carebundle generate --profile mixed --count $count --sex mixed --age-range 30-85 --seed $seed" >&2
mkdir -p "$out"
"$venv/bin/carebundle" generate --profile mixed --count "$count" --sex mixed \
    --age-range 30-85 --seed "$seed" --out "$out" >&2

# Count what was written, and check that every file is a transaction Bundle.
"$venv/bin/python" - "$out" <<'PY'
import json, pathlib, sys

bundles = resources = 0
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    bundle = json.loads(path.read_text())
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
        sys.exit(f"bench-data.sh: {path} is not a transaction Bundle")
    bundles += 1
    resources += len(bundle.get("entry", []))
print(f"{bundles} bundles, {resources} resources in {sys.argv[1]}")
PY
