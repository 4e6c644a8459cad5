#!/usr/bin/env bash
# The server's live heap over a `bench load` run, beside its resident memory: says whether
# memory that grows during a soak is live data (a leak) or memory the allocator keeps.
#
#   scripts/heap-soak.sh [SECONDS]        (default 600, the soak's ten minutes)
#
# 1. builds medvault with the system allocator (`--no-default-features`: heaptrack sees
#    malloc, not mimalloc) and keeps that binary as target/heap-profile/medvault;
# 2. runs `bench load` (2 clients, 200 patients, 2 MiB SQLite caches) for SECONDS with the
#    server under heaptrack (Debian's package, installed with apt-get if missing);
# 3. prints the live heap every 30 s from heaptrack's snapshots (smallest and largest in
#    each window), after the run's own report (throughput, the server's RSS every 30 s).
#
# The wrapper command is split at spaces, so the checkout's path must have none.
#
# heaptrack slows the server about fourfold, so its throughput here is not a benchmark
# figure. Output stays in target/heap-profile (heaptrack's recording, the massif file).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-600}"
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "usage: scripts/heap-soak.sh [SECONDS]" >&2; exit 2; }

if ! command -v heaptrack >/dev/null || ! command -v heaptrack_print >/dev/null; then
    echo "== installing heaptrack (apt-get)" >&2
    apt-get install -y -qq heaptrack >&2 || { apt-get update -qq && apt-get install -y -qq heaptrack >&2; }
fi

cd "$root"
out="$root/target/heap-profile"
mkdir -p "$out"
echo "== building medvault with the system allocator" >&2
cargo build --release --locked -p medvault --no-default-features >&2
cp "${CARGO_TARGET_DIR:-$root/target}/release/medvault" "$out/medvault"
# Put the normal (mimalloc) binary back in target/release.
cargo build --release --locked -p medvault >&2

rm -f "$out"/server.* "$out"/load.txt
echo "== bench load for $seconds s, server under heaptrack" >&2
"$out/medvault" bench load --seconds "$seconds" --concurrency 2 --patients 200 \
    --sqlite-cache-mib 2 --server-wrapper "heaptrack -o $out/server" | tee "$out/load.txt"

recording="$(ls "$out"/server.*)"
echo "== reading $recording (takes about a sixth of the run)" >&2
heaptrack_print -f "$recording" --print-peaks 0 --print-allocators 0 --print-leaks 0 \
    --print-temporary 0 -M "$out/server.massif" | grep -E "peak heap|total memory leaked" || true
python3 - "$out/server.massif" <<'EOF'
import sys
# massif: "time=<s>" then "mem_heap_B=<bytes>" per snapshot.
snapshots, t = [], None
for line in open(sys.argv[1]):
    if line.startswith("time="):
        t = float(line.split("=", 1)[1])
    elif line.startswith("mem_heap_B=") and t is not None:
        snapshots.append((t, int(line.split("=", 1)[1])))
if not snapshots:
    sys.exit("no heap snapshots in the recording")
# Each snapshot is the peak live heap since the one before. A window's smallest is thus an
# upper bound on what stays allocated between requests (a leak raises it); its largest
# adds the requests in flight.
print("live heap per 30 s, smallest and largest snapshot:")
end = snapshots[-1][0]
start = 0.0
while start <= end:
    window = [b for (t, b) in snapshots if start <= t < start + 30]
    if window:
        print(f"  heap t={start:>5.0f}s {min(window) / 1048576:7.2f} MiB {max(window) / 1048576:7.2f} MiB")
    start += 30
EOF
