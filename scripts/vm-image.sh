#!/usr/bin/env bash
# Build the TCG host image of the real-VM test tier (tests/vm): a Debian kernel and an
# initramfs holding busybox, passt, libkrunfw, the KVM modules and this workspace's
# binaries. Everything comes from the package registries; nothing else is fetched.
#
#   scripts/vm-image.sh BIN_DIR OUT_DIR
#
# BIN_DIR holds boxsock, boxsock-krun-shim, boxsock-agent, boxsock-oci, vm-bare-launch and
# boxsock-backend-kit. Every downloaded asset (the kernel, busybox and passt packages, the
# wheel that carries libkrunfw) is pinned below by version and sha256 and checked before
# use; downloads are cached in $BOXSOCK_VM_CACHE (default: target/vm-cache) under their
# hash. OUT_DIR gets vmlinuz, initrd.img and inputs.txt (what went in); the initramfs is
# rebuilt only when the key of its inputs changes.
#
#   scripts/vm-image.sh --suggest-pins   # the pin lines for what the mirror offers now
#
# Exit codes: 0 built (or up to date); 3 an asset cannot be obtained (the caller skips
# loudly with the message on stderr); anything else is a failure.
set -euo pipefail
die() { echo "vm-image: $*" >&2; exit 1; }
unavailable() { echo "vm-image: asset unavailable: $*" >&2; exit 3; }

# --- pins: every downloaded asset, by version and sha256 of the downloaded file ----------
# Debian packages come from the machine's apt sources (`apt-get download PKG=VERSION`), the
# wheel from PyPI (pip). Each file is checked against its sha256 before anything is taken
# from it, on every run (a cached copy too). To move a pin: `scripts/vm-image.sh
# --suggest-pins` prints the lines for what the mirror offers now (decision 0005).
KERNEL_PKG=linux-image-6.1.0-50-amd64
KERNEL_VERSION=6.1.176-1
KERNEL_SHA256=7b5597492a0a65aee61985a492e6bcc3f2cde830072a0e3b3d8c7e1b90279bd3
BUSYBOX_PKG=busybox-static
BUSYBOX_VERSION=1:1.35.0-4+deb12u1+b1
BUSYBOX_SHA256=3d3fdbe91d4660c873e14b092c213fe81c1da6362daa236eb25d0171eb108744
PASST_PKG=passt
PASST_VERSION=0.0~git20230309.7c7625d-1
PASST_SHA256=86cbbf887b293caa4602babeae6b2a903b3303ff61ca9b8c383f684d2d8b5e6c
# libkrunfw.so.5 ships in this wheel (no Debian 12 package has it).
WHEEL_VERSION=0.7.11
WHEEL_FILE="microsandbox-$WHEEL_VERSION-cp310-abi3-manylinux_2_28_x86_64.whl"
WHEEL_SHA256=65f1e4bbf8d721c9f7f557329fb6c8cf41f554c1c6942eac8b941198fa283fe0
KRUNFW_MEMBER=microsandbox/_bundled/lib/libkrunfw.so.5.6.1
MODULES="kernel/virt/lib/irqbypass.ko kernel/drivers/crypto/ccp/ccp.ko kernel/arch/x86/kvm/kvm.ko kernel/arch/x86/kvm/kvm-amd.ko kernel/drivers/net/dummy.ko"
UPDATE_HINT="to move the pin, run scripts/vm-image.sh --suggest-pins and put its lines at the top of scripts/vm-image.sh (decision 0005)"

# suggest PKG: the pin lines for what apt offers now (version and the sha256 the signed
# Packages index records for it).
suggest() {
    local var="$1" pkg="$2" ver sha
    ver="$(apt-cache policy "$pkg" | sed -n 's/^ *Candidate: //p')"
    [ -n "$ver" ] && [ "$ver" != "(none)" ] || { echo "# $pkg: apt offers no version (apt-get update?)"; return; }
    sha="$(apt-cache show "$pkg=$ver" | sed -n 's/^SHA256: //p' | head -1)"
    printf '%s_PKG=%s\n%s_VERSION=%s\n%s_SHA256=%s\n' "$var" "$pkg" "$var" "$ver" "$var" "$sha"
}
if [ "${1:-}" = "--suggest-pins" ]; then
    # The kernel: the package linux-image-amd64 depends on today, with the modules above.
    kpkg="$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1)"
    [ -n "$kpkg" ] || { echo "vm-image: apt-cache cannot resolve linux-image-amd64 (apt-get update first)" >&2; exit 1; }
    suggest KERNEL "$kpkg"
    # The newest may be a security update, which the next one removes from the mirror; a
    # point release's stays until the suite is archived (decision 0005). All offered:
    apt-cache madison linux-image-amd64 | while IFS='|' read -r _ v src; do
        v="$(echo $v)"
        dep="$(apt-cache depends "linux-image-amd64=$v" | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -1)"
        echo "# offered: $dep $v from$(echo "$src" | sed 's/ Packages$//')"
    done
    suggest BUSYBOX busybox-static
    suggest PASST passt
    echo "# the wheel: pip download --no-deps microsandbox==VERSION --platform manylinux_2_28_x86_64 --only-binary=:all: -d DIR; sha256sum DIR/*.whl"
    exit 0
fi
[ $# -eq 2 ] || die "usage: $0 BIN_DIR OUT_DIR"
bin_dir="$(cd "$1" && pwd)"
out="$2"
root_dir="$(cd "$(dirname "$0")/.." && pwd)"
cache="${BOXSOCK_VM_CACHE:-$root_dir/target/vm-cache}"
guest_dir="$root_dir/tests/vm/guest"
mkdir -p "$cache" "$out"

for tool in cpio dpkg-deb apt-get apt-cache ldd strip sha256sum python3; do
    command -v "$tool" >/dev/null || unavailable "$tool not found (.ci/run installs it: apt-get install cpio binutils)"
done
# mkfs.ext4 formats each libkrun box's disk (decision 0023) and e2fsck checks one in the
# disk-* scenarios: this machine's e2fsprogs (.ci/run installs it), copied like the
# workspace's binaries, with its libraries.
E2FS_BINS="$(command -v mke2fs || true) $(command -v e2fsck || true)"
for b in $E2FS_BINS; do [ -x "$b" ] || unavailable "mke2fs/e2fsck not found (apt-get install e2fsprogs)"; done
[ "$(echo $E2FS_BINS | wc -w)" = 2 ] || unavailable "mke2fs or e2fsck not found (apt-get install e2fsprogs)"
for b in boxsock boxsock-krun-shim boxsock-agent boxsock-oci vm-bare-launch boxsock-backend-kit; do
    [ -x "$bin_dir/$b" ] || die "$bin_dir/$b missing (cargo build --bins -p boxsock -p boxsock-libkrun -p boxsock-agent -p boxsock-vm-tests -p boxsock-oci)"
done

# verify NAME FILE SHA256: refuse (exit 1) a file whose hash is not the pinned one.
verify() {
    local got
    got="$(sha256sum "$2" | cut -d' ' -f1)"
    if [ "$got" != "$3" ]; then
        rm -f "$2"
        die "$1: $(basename "$2") has sha256 $got, but the pin is $3; refusing it (removed). If the new file is intended, $UPDATE_HINT"
    fi
}

# deb NAME PKG VERSION SHA256: the pinned package, downloaded once into the cache (named
# by its hash), verified on every run, unpacked; prints the unpacked tree's path.
deb() {
    local name="$1" pkg="$2" ver="$3" sha="$4" d="$cache/deb-$4" f
    mkdir -p "$d"
    f="$(ls "$d"/*.deb 2>/dev/null | head -1 || true)"
    if [ -z "$f" ]; then
        local tmp
        tmp="$(mktemp -d "$d/dl.XXXXXX")"
        if ! (cd "$tmp" && apt-get download "$pkg=$ver" >/dev/null 2>"$tmp/err"); then
            # A refresh of the lists, once: a fresh machine may have none.
            apt-get update -qq >/dev/null 2>&1 || true
            (cd "$tmp" && apt-get download "$pkg=$ver" >/dev/null 2>"$tmp/err") || {
                local err; err="$(tail -2 "$tmp/err" | tr '\n' ' ')"; rm -rf "$tmp"
                unavailable "$name: apt-get download $pkg=$ver failed ($err). The mirror no longer has the pinned version?; $UPDATE_HINT"
            }
        fi
        f="$d/$(basename "$(ls "$tmp"/*.deb)")"
        mv "$tmp"/*.deb "$f" && rm -rf "$tmp"
    fi
    verify "$name ($pkg $ver)" "$f" "$sha"
    if [ ! -f "$d/x/.done" ]; then
        rm -rf "$d/x" && dpkg-deb -x "$f" "$d/x" && touch "$d/x/.done"
    fi
    echo "$d/x"
}

# --- the kernel, busybox and passt: pinned Debian packages ----------------------------------
kx="$(deb kernel "$KERNEL_PKG" "$KERNEL_VERSION" "$KERNEL_SHA256")"
vmlinuz="$(ls "$kx"/boot/vmlinuz-* | head -1)"
moddir="$(ls -d "$kx"/lib/modules/* | head -1)"
for m in $MODULES; do [ -f "$moddir/$m" ] || die "$moddir/$m missing from $KERNEL_PKG $KERNEL_VERSION"; done
bx="$(deb busybox "$BUSYBOX_PKG" "$BUSYBOX_VERSION" "$BUSYBOX_SHA256")"
busybox_bin="$bx/bin/busybox"
{ ldd "$busybox_bin" 2>&1 || true; } | grep -q 'not a dynamic' || die "$busybox_bin from $BUSYBOX_PKG is not static"
px="$(deb passt "$PASST_PKG" "$PASST_VERSION" "$PASST_SHA256")"
passt_bin="$px/usr/bin/passt"
[ -x "$passt_bin" ] || die "$passt_bin missing from $PASST_PKG $PASST_VERSION"

# --- libkrunfw from the pinned wheel --------------------------------------------------------
wdir="$cache/wheel-$WHEEL_SHA256"
mkdir -p "$wdir"
if [ ! -f "$wdir/$WHEEL_FILE" ]; then
    command -v pip >/dev/null || command -v pip3 >/dev/null || unavailable "libkrunfw wheel: pip not found (to download microsandbox==$WHEEL_VERSION)"
    pip="$(command -v pip || command -v pip3)"
    "$pip" download -q --no-deps "microsandbox==$WHEEL_VERSION" --platform manylinux_2_28_x86_64 \
        --only-binary=:all: -d "$wdir" >/dev/null 2>&1 || unavailable "libkrunfw wheel: pip download microsandbox==$WHEEL_VERSION failed; $UPDATE_HINT"
fi
[ -f "$wdir/$WHEEL_FILE" ] || unavailable "libkrunfw wheel: pip did not produce $WHEEL_FILE ($(ls "$wdir"))"
verify "libkrunfw wheel (microsandbox $WHEEL_VERSION)" "$wdir/$WHEEL_FILE" "$WHEEL_SHA256"
# Extracted from the verified wheel on every run (a cached copy is never trusted alone).
python3 - "$wdir/$WHEEL_FILE" "$KRUNFW_MEMBER" "$wdir/libkrunfw.so.5.tmp" <<'PY' || die "cannot extract $KRUNFW_MEMBER from the wheel"
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
mv "$wdir/libkrunfw.so.5.tmp" "$wdir/libkrunfw.so.5"

# --- the key of the initramfs's inputs ------------------------------------------------------
key="$( {
    echo "$KERNEL_SHA256 $BUSYBOX_SHA256 $PASST_SHA256 $WHEEL_SHA256"
    sha256sum "$bin_dir"/boxsock "$bin_dir"/boxsock-krun-shim "$bin_dir"/boxsock-agent \
        "$bin_dir"/boxsock-oci "$bin_dir"/vm-bare-launch "$bin_dir"/boxsock-backend-kit \
        "$guest_dir"/* "$0" $E2FS_BINS |
        cut -d' ' -f1
} | sha256sum | cut -d' ' -f1)"
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
for b in boxsock boxsock-krun-shim boxsock-agent boxsock-oci vm-bare-launch boxsock-backend-kit; do
    strip --strip-debug -o "$stage/opt/boxsock/bin/$b" "$bin_dir/$b"
done
cp "$passt_bin" "$stage/usr/bin/passt"
for b in $E2FS_BINS; do cp "$b" "$stage/usr/sbin/"; done
ln -s mke2fs "$stage/usr/sbin/mkfs.ext4"
# Shared libraries at their host paths (the guest roots of the boxes copy the agent's
# from here, with rootfs::prepare).
for exe in "$stage"/opt/boxsock/bin/* "$stage/usr/bin/passt" "$stage/opt/krunfw/libkrunfw.so.5" \
    "$stage/usr/sbin/mke2fs" "$stage/usr/sbin/e2fsck"; do
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
    echo "kernel: $KERNEL_PKG $KERNEL_VERSION (sha256 $KERNEL_SHA256)"
    echo "busybox: $BUSYBOX_PKG $BUSYBOX_VERSION (sha256 $BUSYBOX_SHA256)"
    echo "passt: $PASST_PKG $PASST_VERSION (sha256 $PASST_SHA256)"
    echo "libkrunfw: $KRUNFW_MEMBER from $WHEEL_FILE (sha256 $WHEEL_SHA256)"
    echo "e2fsprogs: this machine's $(dpkg-query -W -f '${Version}' e2fsprogs 2>/dev/null || echo '?') ($E2FS_BINS)"
    echo "initrd: $(du -h "$out/initrd.img" | cut -f1)"
} > "$out/inputs.txt"
echo "$key" > "$out/key"
echo "vm-image: built $out ($(du -h "$out/initrd.img" | cut -f1) initramfs, key ${key:0:12})"
