#!/usr/bin/env bash
# The whole benchmark suite in one run, every figure next to a baseline measured in the same
# run, ending with one summary table against the targets (copy it into BENCHMARKS.md):
#
#   scripts/bench.sh [--quick]
#
# 1. builds medvault (release);
# 2. generates the carebundle data set (scripts/bench-data.sh, 240 Bundles, ~10,800
#    resources; kept in target/bench-cache/carebundle-240-42 and reused);
# 3. measures the peer: Medplum's in-memory FHIR router ingesting those Bundles
#    (scripts/bench-medplum.sh; no validation, encryption, indexing or durability);
# 4. runs `medvault bench all`: ingest of generated Bundles and of the same carebundle
#    Bundles (each against plain SQLite inserts of the same JSON), AEAD against raw ring, a
#    1M-resource data set (ingest throughput by size, read and Observation?patient=&code=
#    latency against plain SQLite; writes docs/bench-ingest-by-size.svg), and the ledger
#    (1M entries appended and verified).
#
# --quick uses 100,000 resources and ledger entries instead of 1M (about a minute instead
# of four on two cores); its figures are not the ones the targets speak of.
#
# Needs what scripts/bench-data.sh and scripts/bench-medplum.sh need (python3, node, npm) and
# the registries on first use. Scratch data goes to $TMPDIR (about 2.5 GB at 1M resources).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
size=1000000
case "${1:-}" in
    "") ;;
    --quick) size=100000 ;;
    *) echo "usage: scripts/bench.sh [--quick]" >&2; exit 2 ;;
esac

cd "$root"
echo "== building medvault (release)" >&2
cargo build --release --locked -p medvault >&2

cache="${MEDVAULT_BENCH_CACHE:-$root/target/bench-cache}"
data="$cache/carebundle-240-42"
if [[ ! -f "$data/.complete" ]]; then
    rm -rf "$data"
    scripts/bench-data.sh "$data" 240 42 >&2
    touch "$data/.complete"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/medvault-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "== peer: Medplum in-memory router on the carebundle data" >&2
scripts/bench-medplum.sh "$data" >"$work/peer.json"
cat "$work/peer.json"

echo "== medvault bench all" >&2
target/release/medvault bench all \
    --carebundle "$data" \
    --peer "$work/peer.json" \
    --resources "$size" \
    --entries "$size" \
    --plot docs/bench-ingest-by-size.svg \
    --dir "$work"
