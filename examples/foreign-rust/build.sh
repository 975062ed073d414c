#!/usr/bin/env bash
# Builds target/release/foreign-mano (idempotent: a no-op when up to date). Prints one line.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v cargo >/dev/null 2>&1; then
    echo "foreign-rust: cargo not found (install a Rust toolchain: rustup or Debian's cargo)" >&2
    exit 1
fi
start=$(date +%s%N)
if ! log=$(cargo build --release --locked --quiet 2>&1); then
    echo "$log" >&2
    echo "foreign-rust: cargo build failed" >&2
    exit 1
fi
ms=$(( ($(date +%s%N) - start) / 1000000 ))
printf 'foreign-rust: target/release/foreign-mano ready (cargo build --release: %d.%01d s)\n' $((ms / 1000)) $((ms % 1000 / 100))
