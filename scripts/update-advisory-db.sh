#!/usr/bin/env bash
# Refreshes vendor/advisory-db, the snapshot of the RustSec advisory database that the test
# `advisories` (tests/it/advisories.rs) checks Cargo.lock against: the advisories of every crate
# that Cargo.lock names (all versions), the database's licence, and the commit they came from.
#
#   scripts/update-advisory-db.sh [CHECKOUT]
#
# CHECKOUT: a clone of https://github.com/rustsec/advisory-db (default: a fresh shallow clone).
# Run it after changing dependencies, and from time to time for new advisories; then run the
# test and, for an advisory that applies and cannot be avoided, add it to .ci/advisories.toml
# with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:-}
if [ -z "$SRC" ]; then
    SRC=$(mktemp -d)
    git clone --quiet --depth 1 https://github.com/rustsec/advisory-db "$SRC"
fi
[ -d "$SRC/crates" ] || { echo "error: $SRC has no crates/ (not an advisory-db checkout)" >&2; exit 1; }
OUT=vendor/advisory-db
TMP=$(mktemp -d "$OUT.new.XXXX")
mkdir -p "$TMP/crates"
n=0
for c in $(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.lock | sort -u); do
    if [ -d "$SRC/crates/$c" ]; then
        cp -r "$SRC/crates/$c" "$TMP/crates/"
        n=$((n + 1))
    fi
done
cp "$SRC/LICENSE.txt" "$TMP/LICENSE.txt" 2>/dev/null || true
{
    echo "RustSec advisory database (https://github.com/rustsec/advisory-db), CC0-1.0:"
    echo "the advisories of the $n crates of Cargo.lock that have any."
    echo "commit $(git -C "$SRC" rev-parse HEAD), $(git -C "$SRC" log -1 --format=%cs)"
} > "$TMP/SNAPSHOT"
rm -rf "$OUT"
mv "$TMP" "$OUT"
echo "vendor/advisory-db: $n crates with advisories ($(sed -n 3p "$OUT/SNAPSHOT"))"
