#!/usr/bin/env bash
# Build the TCG host image of the real-VM test tier (tests/vm): a Debian kernel and an
# initramfs holding busybox, passt, libkrunfw, the KVM modules and this workspace's
# binaries. Everything comes from the package registries; nothing else is fetched.
#
#   scripts/vm-image.sh BIN_DIR OUT_DIR
#
# BIN_DIR holds boxsock, boxsock-krun-shim, boxsock-agent and vm-bare-launch.
# Downloads are cached in $BOXSOCK_VM_CACHE (default: target/vm-cache), keyed by package
# name and version (the kernel) or pinned by sha256 (the libkrunfw wheel). OUT_DIR gets
# vmlinuz, initrd.img and inputs.txt (what went in); the initramfs is rebuilt only when
# the key of its inputs changes.
#
# Exit codes: 0 built (or up to date); 3 an asset cannot be obtained (the caller skips
# loudly with the message on stderr); anything else is a failure.
set -euo pipefail
die() { echo "vm-image: $*" >&2; exit 1; }
unavailable() { echo "vm-image: asset unavailable: $*" >&2; exit 3; }

[ $# -eq 2 ] || die "usage: $0 BIN_DIR OUT_DIR"
bin_dir="$(cd "$1" && pwd)"
out="$2"
root_dir="$(cd "$(dirname "$0")/.." && pwd)"
cache="${BOXSOCK_VM_CACHE:-$root_dir/target/vm-cache}"
guest_dir="$root_dir/tests/vm/guest"
mkdir -p "$cache" "$out"

# libkrunfw.so.5 ships in this wheel; pinned by version and sha256.
WHEEL_VERSION=0.7.11
WHEEL_FILE="microsandbox-$WHEEL_VERSION-cp310-abi3-manylinux_2_28_x86_64.whl"
WHEEL_SHA256=65f1e4bbf8d721c9f7f557329fb6c8cf41f554c1c6942eac8b941198fa283fe0
KRUNFW_MEMBER=microsandbox/_bundled/lib/libkrunfw.so.5.6.1
MODULES="kernel/virt/lib/irqbypass.ko kernel/drivers/crypto/ccp/ccp.ko kernel/arch/x86/kvm/kvm.ko kernel/arch/x86/kvm/kvm-amd.ko kernel/drivers/net/dummy.ko"

for tool in cpio dpkg-deb apt-get apt-cache ldd strip; do
    command -v "$tool" >/dev/null || unavailable "$tool not found (.ci/run installs it: apt-get install cpio binutils)"
done
command -v passt >/dev/null || unavailable "passt not found (apt-get install passt)"
command -v busybox >/dev/null || unavailable "busybox not found (apt-get install busybox-static)"
busybox_bin="$(command -v busybox)"
{ ldd "$busybox_bin" 2>&1 || true; } | grep -q 'not a dynamic' || die "$busybox_bin is not static (install busybox-static)"
for b in boxsock boxsock-krun-shim boxsock-agent vm-bare-launch; do
    [ -x "$bin_dir/$b" ] || die "$bin_dir/$b missing (cargo build --bins -p boxsock -p boxsock-libkrun -p boxsock-agent -p boxsock-vm-tests)"
done

# --- the kernel: whatever linux-image-amd64 depends on today, cached by name+version ----
kpkg="$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1)"
if [ -z "$kpkg" ]; then
    # A machine without package lists: refresh them once.
    apt-get update -qq >/dev/null 2>&1 || true
    kpkg="$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1)"
fi
[ -n "$kpkg" ] || unavailable "apt-cache cannot resolve linux-image-amd64 (no package lists?)"
kver="$(apt-cache policy "$kpkg" | sed -n 's/^ *Candidate: //p')"
kdir="$cache/$kpkg-$kver"
if [ ! -f "$kdir/.done" ]; then
    rm -rf "$kdir" && mkdir -p "$kdir/deb"
    (cd "$kdir/deb" && apt-get download "$kpkg=$kver" >/dev/null 2>&1) || unavailable "apt-get download $kpkg=$kver failed"
    dpkg-deb -x "$kdir"/deb/*.deb "$kdir/x"
    rm -rf "$kdir/deb"
    touch "$kdir/.done"
fi
vmlinuz="$(ls "$kdir"/x/boot/vmlinuz-* | head -1)"
moddir="$(ls -d "$kdir"/x/lib/modules/* | head -1)"
for m in $MODULES; do [ -f "$moddir/$m" ] || die "$moddir/$m missing from $kpkg"; done

# --- libkrunfw from the pinned wheel --------------------------------------------------------
wdir="$cache/wheel-$WHEEL_SHA256"
if [ ! -f "$wdir/libkrunfw.so.5" ]; then
    mkdir -p "$wdir"
    if [ ! -f "$wdir/$WHEEL_FILE" ]; then
        command -v pip >/dev/null || command -v pip3 >/dev/null || unavailable "pip not found (to download the microsandbox wheel)"
        pip="$(command -v pip || command -v pip3)"
        "$pip" download -q --no-deps "microsandbox==$WHEEL_VERSION" --platform manylinux_2_28_x86_64 \
            --only-binary=:all: -d "$wdir" >/dev/null 2>&1 || unavailable "pip download microsandbox==$WHEEL_VERSION failed"
    fi
    got="$(sha256sum "$wdir/$WHEEL_FILE" | cut -d' ' -f1)"
    if [ "$got" != "$WHEEL_SHA256" ]; then
        rm -f "$wdir/$WHEEL_FILE"
        die "$WHEEL_FILE has sha256 $got, pinned $WHEEL_SHA256: refusing it"
    fi
    python3 - "$wdir/$WHEEL_FILE" "$KRUNFW_MEMBER" "$wdir/libkrunfw.so.5.tmp" <<'PY' || die "cannot extract $KRUNFW_MEMBER from the wheel"
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    mv "$wdir/libkrunfw.so.5.tmp" "$wdir/libkrunfw.so.5"
fi

# --- the key of the initramfs's inputs ------------------------------------------------------
key="$( {
    echo "$kpkg=$kver $WHEEL_SHA256"
    sha256sum "$busybox_bin" "$(command -v passt)" "$bin_dir"/boxsock "$bin_dir"/boxsock-krun-shim \
        "$bin_dir"/boxsock-agent "$bin_dir"/vm-bare-launch "$guest_dir"/* "$0" | cut -d' ' -f1
} | sha256sum | cut -d' ' -f1)"
# The backend conformance kit's binary (tests/vm, scenario backend-kit), in the key too.
kit_bin="$bin_dir/boxsock-backend-kit"
[ -x "$kit_bin" ] || die "$kit_bin missing (cargo build --bins -p boxsock-vm-tests)"
key="$(printf '%s %s\n' "$key" "$(sha256sum "$kit_bin" | cut -d' ' -f1)" | sha256sum | cut -d' ' -f1)"
if [ -f "$out/key" ] && [ "$(cat "$out/key")" = "$key" ] && [ -f "$out/initrd.img" ]; then
    echo "vm-image: up to date ($out, key ${key:0:12})"
    exit 0
fi

stage="$(mktemp -d "${TMPDIR:-/tmp}/vm-image.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc,mnt,newroot,lib/modules,opt/boxsock/bin,opt/krunfw,work}
cp "$busybox_bin" "$stage/bin/busybox"
for m in $MODULES; do cp "$moddir/$m" "$stage/lib/modules/"; done
cp "$wdir/libkrunfw.so.5" "$stage/opt/krunfw/libkrunfw.so.5"
for b in boxsock boxsock-krun-shim boxsock-agent vm-bare-launch; do
    strip --strip-debug -o "$stage/opt/boxsock/bin/$b" "$bin_dir/$b"
done
strip --strip-debug -o "$stage/opt/boxsock/bin/boxsock-backend-kit" "$kit_bin"
cp "$(command -v passt)" "$stage/usr/bin/passt"
# Shared libraries at their host paths (the guest roots of the boxes copy the agent's
# from here, with rootfs::prepare).
for exe in "$stage"/opt/boxsock/bin/* "$stage/usr/bin/passt" "$stage/opt/krunfw/libkrunfw.so.5"; do
    { ldd "$exe" 2>/dev/null || true; } | { grep -o '/[^ ]*' || true; } | while read -r lib; do
        [ -e "$lib" ] || continue
        mkdir -p "$stage$(dirname "$lib")"
        cp -L "$lib" "$stage$lib"
    done
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$stage/etc/passwd"
echo 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >> "$stage/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$stage/etc/group"
install -m 0755 "$guest_dir/init" "$stage/init"
install -m 0755 "$guest_dir/scenarios.sh" "$stage/scenarios.sh"

(cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet) > "$out/initrd.img.tmp"
mv "$out/initrd.img.tmp" "$out/initrd.img"
cp "$vmlinuz" "$out/vmlinuz"
{
    echo "kernel: $kpkg $kver"
    echo "libkrunfw: $KRUNFW_MEMBER from $WHEEL_FILE (sha256 $WHEEL_SHA256)"
    echo "busybox: $(dpkg-query -W -f '${Package} ${Version}' busybox-static 2>/dev/null || echo "$busybox_bin")"
    echo "passt: $(dpkg-query -W -f '${Package} ${Version}' passt 2>/dev/null || command -v passt)"
    echo "initrd: $(du -h "$out/initrd.img" | cut -f1)"
} > "$out/inputs.txt"
echo "$key" > "$out/key"
echo "vm-image: built $out ($(du -h "$out/initrd.img" | cut -f1) initramfs, key ${key:0:12})"
