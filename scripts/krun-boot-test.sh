#!/usr/bin/env bash
# The real-VM tier's scenarios (tests/vm/guest/scenarios.sh), pointed at this host's
# /dev/kvm instead of a QEMU TCG host: real libkrun boxes under a >300-byte home, through
# the real CLI.
#
# Prerequisites:
#   - Linux with hardware KVM: /dev/kvm from kvm_intel or kvm_amd (not kvm_pvm),
#     readable and writable by you (group kvm).
#   - libkrunfw.so.5: set LIBKRUNFW_DIR to its directory; without it, the pinned copy
#     from the microsandbox wheel is used (scripts/vm-image.sh fetches it with pip into
#     target/vm-cache).
#   - passt (apt-get install passt) and a static busybox (apt-get install busybox-static,
#     or BUSYBOX=/path): /bin/sh in the boxes' guest roots and the network scenario's
#     web server.
#
# Usage: scripts/krun-boot-test.sh [SCENARIO,...]   (from anywhere; all by default)
# Prints one "@@VM result <name> pass|fail|skip" line per scenario; exits 1 if any failed.
set -euo pipefail
die() { echo "krun-boot-test: $*" >&2; exit 1; }
cd "$(dirname "$0")/.."

[ -e /dev/kvm ] || die "/dev/kvm does not exist: this host has no KVM (the TCG tier, cargo test -p boxsock-vm-tests, needs none)"
[ -d /sys/module/kvm_pvm ] && die "/dev/kvm is kvm_pvm (PVM): libkrun guests die at their first instruction here; run cargo test -p boxsock-vm-tests instead"
[ -r /dev/kvm ] && [ -w /dev/kvm ] || die "/dev/kvm is not read-write for $(id -un): add yourself to group kvm"
command -v passt >/dev/null || die "passt not found: apt-get install passt"
busybox="${BUSYBOX:-$(command -v busybox || true)}"
[ -x "$busybox" ] || die "no busybox: apt-get install busybox-static or set BUSYBOX"
{ ldd "$busybox" 2>&1 || true; } | grep -q 'not a dynamic' || die "$busybox is not static (install busybox-static)"

cargo build --bins -p boxsock -p boxsock-libkrun -p boxsock-agent -p boxsock-vm-tests -p boxsock-oci
bin="$PWD/target/debug"
if [ -z "${LIBKRUNFW_DIR:-}" ]; then
    # The image builder fetches and checks the pinned libkrunfw (and the rest of the TCG
    # image, unused here).
    scripts/vm-image.sh "$bin" target/vm/image >/dev/null
    LIBKRUNFW_DIR="$(ls -d target/vm-cache/wheel-*/ | head -1)"
fi
[ -e "$LIBKRUNFW_DIR/libkrunfw.so.5" ] || die "no libkrunfw.so.5 in $LIBKRUNFW_DIR"
LIBKRUNFW_DIR="$(cd "$LIBKRUNFW_DIR" && pwd)"

work="$(mktemp -d /tmp/krun-boot-test.XXXXXX)"
www="$work/www"
mkdir -p "$www" && echo hello-from-tcg-host > "$www/hello.txt" && head -c 262144 /dev/urandom > "$www/big.bin"
# The network scenario's only peers: passt maps the guest's gateway to this host's
# loopback, where these two services listen (8080: hello.txt, 8081: 256 KB; busybox nc
# cannot bind loopback only, so they listen on every address while the test runs).
printf '#!/bin/sh\nexec cat %s/hello.txt\n' "$www" > "$work/hello.sh"
printf '#!/bin/sh\nexec cat %s/big.bin\n' "$www" > "$work/big.sh"
chmod +x "$work/hello.sh" "$work/big.sh"
"$busybox" nc -ll -p 8080 -e "$work/hello.sh" &
s1=$!
"$busybox" nc -ll -p 8081 -e "$work/big.sh" &
s2=$!
trap 'kill $s1 $s2 2>/dev/null || true; rm -rf "$work"' EXIT

out="$work/results.txt"
BOXSOCK_BIN_DIR="$bin" LIBKRUNFW_DIR="$LIBKRUNFW_DIR" BUSYBOX="$busybox" VM_WORK="$work/w" VM_WWW="$www" VM_ONLY="${1:-}" \
    "$busybox" sh tests/vm/guest/scenarios.sh | tee "$out"
grep -q '^@@VM result .* fail' "$out" && die "some scenarios failed (above)"
echo "krun-boot-test: OK"
