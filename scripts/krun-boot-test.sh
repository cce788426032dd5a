#!/usr/bin/env bash
# Boot a real libkrun box under a >300-byte home and exec through the agent.
#
# Run this on a host that can boot libkrun guests. It cannot pass on the project's
# build machines (their /dev/kvm is PVM, see docs/backends.md).
#
# Prerequisites:
#   - Linux with hardware KVM: /dev/kvm from kvm_intel or kvm_amd (not kvm_pvm),
#     readable and writable by you (group kvm).
#   - libkrunfw.so.5 where the dynamic loader finds it (ldconfig -p | grep libkrunfw),
#     e.g. built from https://github.com/containers/libkrunfw, or set LIBKRUNFW_DIR to
#     its directory (added to LD_LIBRARY_PATH and to the shim's read-only grants).
#   - passt (Debian/Ubuntu: apt-get install passt) for the network step.
#   - rustup with the musl target of this machine (the agent is static in the guest).
#   - optional: a static busybox (BUSYBOX=/path) so the guest has /bin/sh.
#
# On a machine that cannot boot, `cargo test -p boxsock --test krun` covers what can be
# checked without a guest (configure_only through the CLI).
#
# Usage: scripts/krun-boot-test.sh            (from the repository root)
set -euo pipefail

die() { echo "krun-boot-test: $*" >&2; exit 1; }
cd "$(dirname "$0")/.."

# --- prerequisites -----------------------------------------------------------------
[ -e /dev/kvm ] || die "/dev/kvm does not exist: this host has no KVM"
[ -d /sys/module/kvm_pvm ] && die "/dev/kvm is kvm_pvm (PVM): libkrun guests die at their first instruction here"
[ -r /dev/kvm ] && [ -w /dev/kvm ] || die "/dev/kvm is not read-write for $(id -un): add yourself to group kvm"
if [ -n "${LIBKRUNFW_DIR:-}" ]; then
    export LD_LIBRARY_PATH="$LIBKRUNFW_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if ! { ldconfig -p 2>/dev/null | grep -q 'libkrunfw\.so\.5' || [ -e "${LIBKRUNFW_DIR:-/nonexistent}/libkrunfw.so.5" ]; }; then
    die "libkrunfw.so.5 not found: install libkrunfw or set LIBKRUNFW_DIR"
fi
command -v passt >/dev/null || die "passt not found: apt-get install passt"
arch="$(uname -m)"
target="$arch-unknown-linux-musl"
rustup target list --installed | grep -qx "$target" || die "rustup target add $target"

# --- build ---------------------------------------------------------------------------
cargo build -p boxsock -p boxsock-libkrun --bin boxsock --bin boxsock-krun-shim
cargo build --release --target "$target" -p boxsock-agent --bin boxsock-agent
agent="$PWD/target/$target/release/boxsock-agent"
file "$agent" 2>/dev/null | grep -q 'statically linked' || echo "warning: $agent may not be static" >&2

work="$(mktemp -d /tmp/krun-boot-test.XXXXXX)"
bs=()
id=""
cleanup() {
    if [ -n "$id" ]; then "${bs[@]}" rm -f "$id" >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# --- a >300-byte home ---------------------------------------------------------------------
home="$work"
while [ "${#home}" -le 300 ]; do home="$home/deeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeep"; done
mkdir -p "$home"
echo "home is ${#home} bytes: $home"

# --- 1. the backend's own real-host test (launch, shim stays up) ---------------------------
BOXSOCK_GUEST_AGENT="$agent" cargo test -p boxsock-libkrun --test launch boots_a_box_on_a_real_kvm_host -- --nocapture

# --- 2. end to end through the CLI --------------------------------------------------------
# The flags are the CLI's (docs/runtime.md). `create` prepares the box's guest root
# (rootfs::prepare) with the agent given by `--backend-option agent=`; a busybox is added
# to that root with scripts/build-guest-root.sh (prepare is idempotent).
bs=(target/debug/boxsock --home "$home" --helper-dir "$PWD/target/debug" --backend libkrun
    --backend-option "agent=$agent" --ready-timeout 60)
[ -n "${LIBKRUNFW_DIR:-}" ] && bs+=(--backend-option "read_only=$LIBKRUNFW_DIR")
"${bs[@]}" doctor | sed -n '/^backend libkrun/,/^backend /p'

# 2a. direct cannot serve this home: create fails at once, naming the socket.
if out="$("${bs[@]}" --strategy direct create --network 2>&1)"; then
    die "create with --strategy direct under a ${#home}-byte home succeeded: $out"
fi
echo "$out" | grep -q 'socket "agent"' || die "direct's refusal does not name the socket: $out"

# 2b. short-symlink: create, start (waits for the guest agent's readiness), exec, rm.
id="$("${bs[@]}" --strategy short-symlink create --network)"
echo "created box $id"
if [ -n "${BUSYBOX:-}" ]; then
    AGENT="$agent" BUSYBOX="$BUSYBOX" scripts/build-guest-root.sh "$home/boxes/$id/rootfs"
fi
"${bs[@]}" start "$id" || { "${bs[@]}" inspect "$id"; die "start failed (spec: $home/boxes/$id/shim-spec.json)"; }
"${bs[@]}" inspect "$id"
if [ -n "${BUSYBOX:-}" ]; then
    got="$("${bs[@]}" exec "$id" -- /bin/sh -c 'echo hello-from-guest')"
    [ "$got" = "hello-from-guest" ] || die "exec through the agent returned: $got"
else
    "${bs[@]}" exec "$id" -- /boxsock-agent --help >/dev/null || die "exec of /boxsock-agent --help failed"
fi
"${bs[@]}" stop "$id"
"${bs[@]}" rm "$id"
id=""
echo "krun-boot-test: OK"
