#!/usr/bin/env bash
# Fuzz every parser of network and file input for a while (README: "Fuzzing").
#
#   scripts/fuzz.sh [TARGET...]      # default: every target in fuzz/fuzz_targets/
#
#   FUZZ_SECONDS=60        seconds per target
#   FUZZ_SANITIZER=address address (default) or none (about twice the executions per second)
#   CARGO_TARGET_DIR       where to build (cargo's default: fuzz/target)
#
# Installs cargo-fuzz if it is missing, builds every target, then runs each one on a
# temporary copy of its seed corpus (fuzz/corpus/<target>/ is never changed). Exits non-zero
# if any target crashed, panicked, leaked, ran out of memory or hung on an input, and prints
# where the reproducer was saved (fuzz/artifacts/<target>/) and how to replay it.
#
# cargo fuzz passes nightly-only flags to rustc (-Zsanitizer=address); RUSTC_BOOTSTRAP=1
# lets the stable toolchain accept them, so no nightly toolchain is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
sanitizer=${FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1
# The version the committed fuzz/Cargo.lock and this script were made with.
cargo_fuzz_version=0.13.2

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz $cargo_fuzz_version"
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for f in fuzz/fuzz_targets/*.rs; do
        targets+=("$(basename "$f" .rs)")
    done
fi

start=$SECONDS
echo "== cargo fuzz build (sanitizer: $sanitizer)"
cargo fuzz build --sanitizer "$sanitizer"
echo "   built in $((SECONDS - start)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
    echo "== $t: ${seconds} s"
    mkdir -p "$work/corpus/$t" "fuzz/artifacts/$t"
    cp -R "fuzz/corpus/$t/." "$work/corpus/$t/"
    before=$(ls "fuzz/artifacts/$t")
    log="$work/$t.log"
    # -timeout: an input taking 10 s is a hang; -rss_limit_mb: libFuzzer's default, spelt out.
    if cargo fuzz run --sanitizer "$sanitizer" "$t" "$work/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | sed 's/^/   /' || true
    else
        failed+=("$t")
        cp "$log" "fuzz/artifacts/$t/last-failure.log"
        echo "!! $t FAILED (whole log: fuzz/artifacts/$t/last-failure.log):"
        grep -E -A4 'panicked at|==ERROR|^ERROR|^SUMMARY|Slowest unit|out-of-memory|Timeout' "$log" \
            | head -n 40 | sed 's/^/   /' || tail -n 40 "$log" | sed 's/^/   /'
        for a in $(ls "fuzz/artifacts/$t"); do
            if [ "$a" != last-failure.log ] && ! grep -qxF "$a" <<<"$before"; then
                echo "!! reproducer: fuzz/artifacts/$t/$a"
                echo "   replay: RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer $sanitizer $t fuzz/artifacts/$t/$a"
            fi
        done
    fi
done

echo "== fuzzing took $((SECONDS - start)) s in all (${#targets[@]} targets, ${seconds} s each)"
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "no crashes"
