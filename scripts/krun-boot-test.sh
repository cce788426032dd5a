#!/usr/bin/env bash
# Boot a real libkrun box under a >200-byte home and exec through the agent.
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
cargo build -p boxsock-libkrun --bin boxsock-krun-shim
cargo build --release --target "$target" -p boxsock-agent
agent="target/$target/release/boxsock-agent"
file "$agent" 2>/dev/null | grep -q 'statically linked' || echo "warning: $agent may not be static" >&2

# --- a guest root ---------------------------------------------------------------------
work="$(mktemp -d /tmp/krun-boot-test.XXXXXX)"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs-template"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,etc}
install -m 0755 "$agent" "$root/boxsock-agent"
if [ -n "${BUSYBOX:-}" ]; then install -m 0755 "$BUSYBOX" "$root/bin/busybox"; ln -s busybox "$root/bin/sh"; fi

# --- a >200-byte home --------------------------------------------------------------------
home="$work"
while [ "${#home}" -le 200 ]; do home="$home/deeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeep"; done
mkdir -p "$home"
echo "home is ${#home} bytes: $home"

# --- 1. the backend's own real-host test (launch, shim stays up) ---------------------------
BOXSOCK_GUEST_AGENT="$agent" cargo test -p boxsock-libkrun --test launch boots_a_box_on_a_real_kvm_host -- --nocapture

# --- 2. end to end through the CLI: create, wait ready, exec, remove -------------------------
# Uses the `boxsock` CLI (cli/, landing separately): the subcommands and flags below are
# the intended ones (create/exec/rm, --backend, --strategy, --rootfs, --network); adjust
# them here if the CLI settles on others.
cargo build -p boxsock
bs=(target/debug/boxsock --home "$home")
opts=(--backend libkrun --strategy short-symlink)
[ -n "${LIBKRUNFW_DIR:-}" ] && opts+=(--backend-option "read_only=$LIBKRUNFW_DIR")
id="$("${bs[@]}" create "${opts[@]}" --rootfs "$root" --network)"
echo "created box $id"
out="$("${bs[@]}" exec "$id" -- /boxsock-agent --version 2>&1 || true)"
echo "exec output: $out"
if [ -n "${BUSYBOX:-}" ]; then
    got="$("${bs[@]}" exec "$id" -- /bin/sh -c 'echo hello-from-guest')"
    [ "$got" = "hello-from-guest" ] || die "exec through the agent returned: $got"
fi
"${bs[@]}" rm -f "$id"
echo "krun-boot-test: OK"
