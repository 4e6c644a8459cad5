#!/usr/bin/env bash
# Peer figure for the ingest benchmark: Medplum's FHIR router with its in-memory repository
# (@medplum/fhir-router MemoryRepository, in-process, no HTTP) ingesting the benchmark's
# transaction Bundles. MemoryRepository does no validation, no encryption, no search indexing
# and no durability: say so next to any figure quoted from this script.
#
#   scripts/bench-medplum.sh DATA_DIR [ROUNDS]
#
# DATA_DIR holds the transaction Bundles (scripts/bench-data.sh DATA_DIR makes them). ROUNDS
# (default 5) rounds each ingest every Bundle into a fresh MemoryRepository; see
# bench/medplum/ingest.mjs for what is timed and checked. Prints ingest.mjs's one JSON line on
# stdout ({"peer":..., "resources_per_s_median":..., ...}); progress goes to stderr. Exits
# non-zero if any Bundle is not ingested whole.
#
# bench/medplum is installed with `npm ci` from its committed package-lock.json into a copy
# outside the source tree: CACHE_DIR/medplum, with CACHE_DIR $MEDVAULT_BENCH_CACHE or else
# target/bench-cache at the repository root; reinstalled when package.json or the lock file
# change. Nothing is written inside the source tree except there.
#
# Needs node (20.19 or later), npm, flock and sha256sum on PATH, and the npm registry on
# first use.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/bench/medplum"
data="${1:?usage: bench-medplum.sh DATA_DIR [ROUNDS]}"
rounds="${2:-5}"
cache="${MEDVAULT_BENCH_CACHE:-$root/target/bench-cache}"

for tool in node npm flock sha256sum; do
    command -v "$tool" >/dev/null || { echo "bench-medplum.sh: $tool is not on PATH" >&2; exit 1; }
done
[[ -d "$data" ]] || { echo "bench-medplum.sh: $data is not a directory" >&2; exit 2; }
data="$(cd "$data" && pwd)"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"

# One installer at a time per cache; the copy of ingest.mjs is refreshed under the lock too.
exec 9>"$cache/.lock"
flock 9
dir="$cache/medplum"
want="$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -c1-16)"
mkdir -p "$dir"
cp "$src/package.json" "$src/package-lock.json" "$src/ingest.mjs" "$dir/"
if [[ ! -d "$dir/node_modules" || "$(cat "$dir/.installed" 2>/dev/null)" != "$want" ]]; then
    echo "== npm ci in $dir" >&2
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$want" >"$dir/.installed"
fi
flock -u 9

echo "== Medplum MemoryRepository ingest of $data ($rounds rounds, $(node --version))" >&2
# --expose-gc lets ingest.mjs collect the previous round's repository before the clock starts.
exec node --expose-gc "$dir/ingest.mjs" "$data" "$rounds"
