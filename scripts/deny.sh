#!/usr/bin/env bash
# Check what enters the dependency graph against deny.toml (README: "Dependencies"):
#
#   scripts/deny.sh
#
# Installs cargo-deny (the pinned version below) if it is missing, then checks the
# workspace and the fuzz package (its own Cargo.lock) for banned crates, licences and
# sources. Both graphs are also checked against the RustSec advisory database when a copy
# can be had (fetched from GitHub, or left by an earlier fetch). Without one, the
# advisories check is reported as not run; every other check still fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

# (It needs rustc 1.88 or later to build, newer than the workspace's MSRV of 1.85; CI
# uses the machine's toolchain.)
cargo_deny_version=0.20.2
if [[ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $cargo_deny_version" ]]; then
    echo "== installing cargo-deny $cargo_deny_version"
    cargo install cargo-deny --locked --version "$cargo_deny_version"
fi

manifests=(Cargo.toml fuzz/Cargo.toml)
for m in "${manifests[@]}"; do
    echo "== cargo deny ($m): bans, licenses, sources"
    cargo deny --manifest-path "$m" --config deny.toml --locked check -A license-exception-not-encountered bans licenses sources
done

# The advisories need the database: fetched (or updated) if GitHub answers, else the copy
# an earlier fetch left in cargo-deny's directory, if any. cargo-deny refuses a copy older
# than 90 days: that fails this script, on purpose (an old database would pass crates it
# should not). Yanked crates are checked with the advisories, so only when they are.
dbs="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
fetch_log="$(mktemp "${TMPDIR:-/tmp}/deny-fetch.XXXXXX")"
trap 'rm -f "$fetch_log"' EXIT
if timeout 120 cargo deny --manifest-path Cargo.toml --config deny.toml fetch db >"$fetch_log" 2>&1; then
    echo "== cargo deny: RustSec advisory database fetched"
else
    echo "== cargo deny: fetching the RustSec advisory database failed:"
    tail -n 3 "$fetch_log" | sed 's/^/   /'
    if compgen -G "$dbs/*/" >/dev/null; then
        echo "== cargo deny: advisory database NOT UPDATED; using the copy in $dbs"
    else
        echo "== cargo deny: advisories (and yanked crates) NOT CHECKED: no earlier copy in $dbs"
        exit 0
    fi
fi
for m in "${manifests[@]}"; do
    echo "== cargo deny ($m): advisories"
    cargo deny --manifest-path "$m" --config deny.toml --frozen check advisories
done
