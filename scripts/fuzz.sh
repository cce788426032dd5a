#!/usr/bin/env bash
# Fuzz every input boundary of boxsock with cargo-fuzz (libFuzzer + AddressSanitizer).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]    run every target (default 20 s each: the CI run)
#   scripts/fuzz.sh 3600                    a long run: one hour per target
#   FUZZ_TARGETS="proto_decode" scripts/fuzz.sh 600    only some targets
#   scripts/fuzz.sh --regen-seeds           rewrite the committed seed inputs (tests/fuzz/examples/gen_seeds.rs)
#   scripts/fuzz.sh --ci                    CI's run: reproducible (see below)
#
# --ci: each target runs a fixed number of inputs (FUZZ_CI_RUNS, default 200000) from a
# fixed seed (-seed=1), from the committed seeds only (no corpus of earlier local runs),
# capped at 60 s: as much fuzzing on a slow machine as on a fast one. It is not
# bit-for-bit repeatable: the targets' hash maps are randomly seeded, so coverage, and
# with it the inputs kept, varies a little between runs (two runs of image_reference:
# 919 and 959 new units). Finding new bugs is the long runs' job (`scripts/fuzz.sh
# 3600`), before a change lands.
#
# Targets (tests/fuzz/fuzz_targets/): box_id (id parser + layout paths), socket_name
# (socket file names + socket_path), proto_decode (agent frames: decode, read_frame,
# re-encode), address_uri (SocketAddress URIs), store_config (BoxConfig rows, also
# through an in-memory store), image_manifest (OCI/docker manifests and indexes: media
# types, descriptors, platform choice), image_config (image configs and docker's override
# rules), image_reference (image references). Each checks: no panic, no path outside the home, a clear
# error. Dictionaries in tests/fuzz/dicts/<target>.dict are used when present. Each run starts from the committed seeds
# (tests/fuzz/seeds/<target>, read-only) plus the working corpus libFuzzer grows in
# tests/fuzz/corpus/<target> (ignored by git, kept between runs). Works on a fresh
# machine: installs cargo-fuzz and the nightly toolchain when they are missing.
# Exits non-zero on the first crash and prints the reproducer's path and the command
# that replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
fuzz_dir=tests/fuzz

TARGETS=(box_id socket_name proto_decode address_uri store_config image_manifest image_config image_reference)

if [ "${1:-}" = "--regen-seeds" ]; then
    cargo run --quiet --manifest-path "$fuzz_dir/Cargo.toml" --example gen_seeds -- "$root/$fuzz_dir/seeds"
    exit 0
fi

ci=0
if [ "${1:-}" = "--ci" ]; then
    ci=1
    shift
fi
secs=${1:-20}
case $secs in
    ''|*[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET] | --ci | --regen-seeds" >&2; exit 2 ;;
esac
runs=${FUZZ_CI_RUNS:-200000}
if [ -n "${FUZZ_TARGETS:-}" ]; then
    read -r -a TARGETS <<<"$FUZZ_TARGETS"
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    # Pinned for reproducible CI; about 1.5 min on 2 cores.
    echo "fuzz: installing cargo-fuzz ${CARGO_FUZZ_VERSION:-0.13.2}" >&2
    cargo install cargo-fuzz --locked --version "${CARGO_FUZZ_VERSION:-0.13.2}"
fi

cargo +nightly fuzz build --fuzz-dir "$fuzz_dir"

for t in "${TARGETS[@]}"; do
    mkdir -p "$fuzz_dir/corpus/$t" "$fuzz_dir/artifacts/$t"
    dict=()
    [ -f "$fuzz_dir/dicts/$t.dict" ] && dict=(-dict="$fuzz_dir/dicts/$t.dict")
    log=$(mktemp)
    if [ $ci = 1 ]; then
        # A scratch corpus (libFuzzer writes new inputs to the first directory) seeded by
        # the committed seeds alone: nothing from an earlier run changes what runs.
        corpus=$(mktemp -d)
        bound=(-seed=1 -runs="$runs" -max_total_time=60)
        echo "fuzz: $t, $runs inputs from seed 1" >&2
    else
        corpus="$fuzz_dir/corpus/$t"
        bound=(-max_total_time="$secs")
        echo "fuzz: $t for ${secs}s" >&2
    fi
    # -rss_limit_mb bounds memory; -max_len lets inputs reach past every length limit
    # (ids 32 bytes, socket names 46, a frame header plus a body).
    if ! cargo +nightly fuzz run --fuzz-dir "$fuzz_dir" "$t" \
        "$corpus" "$fuzz_dir/seeds/$t" \
        -- "${bound[@]}" -max_len=8192 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" \
        2>&1 | tee "$log" >&2; then
        repro=$(grep -oE "$fuzz_dir/artifacts/$t/[A-Za-z0-9_.-]+" "$log" | tail -n 1 || true)
        [ -z "$repro" ] && repro=$(ls -t "$fuzz_dir/artifacts/$t/"* 2>/dev/null | head -n 1 || true)
        echo >&2
        echo "fuzz: target $t FAILED" >&2
        echo "fuzz: reproducer: ${repro:-<none written; see the log above>}" >&2
        [ -n "$repro" ] && echo "fuzz: replay with: cargo +nightly fuzz run --fuzz-dir $fuzz_dir $t $repro" >&2
        [ $ci = 1 ] && echo "fuzz: CI's run; replay it with: scripts/fuzz.sh --ci (FUZZ_TARGETS=$t)" >&2
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
    [ $ci = 1 ] && rm -rf "$corpus"
done
if [ $ci = 1 ]; then
    echo "fuzz: all ${#TARGETS[@]} targets ran $runs inputs each from seed 1 without a crash" >&2
else
    echo "fuzz: all ${#TARGETS[@]} targets ran ${secs}s each without a crash" >&2
fi
