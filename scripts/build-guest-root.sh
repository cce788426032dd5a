#!/usr/bin/env bash
# Build a libkrun guest root in DIR: /boxsock-agent, its ELF interpreter and shared
# libraries (none for a static agent), /proc /sys /dev /tmp /etc, and optionally a
# busybox as /bin/sh. See boxsock_libkrun::rootfs and docs/backends.md ("Guest root").
#
# Usage: scripts/build-guest-root.sh DIR          (from anywhere in the repository)
#
# Environment:
#   AGENT=/path/boxsock-agent   use this agent instead of building one
#   BUSYBOX=/path/busybox       also install it as /bin/busybox, with /bin/sh -> busybox
#   PROFILE=release             build the agent with --release (default: debug)
#
# Without AGENT, the agent is built static when the musl target of this machine is
# installed (rustup target add "$(uname -m)-unknown-linux-musl"), and dynamic
# (glibc, libraries copied alongside) otherwise.
set -euo pipefail

die() { echo "build-guest-root: $*" >&2; exit 1; }
[ $# -eq 1 ] || die "usage: $0 DIR"
dir="$1"
cd "$(dirname "$0")/.."

profile="${PROFILE:-debug}"
profile_flag=()
[ "$profile" = release ] && profile_flag=(--release)

if [ -z "${AGENT:-}" ]; then
    target="$(uname -m)-unknown-linux-musl"
    if command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx "$target"; then
        cargo build "${profile_flag[@]}" --target "$target" -p boxsock-agent --bin boxsock-agent
        AGENT="target/$target/$profile/boxsock-agent"
    else
        echo "build-guest-root: $target not installed; building a dynamic agent (its libraries are copied too)" >&2
        cargo build "${profile_flag[@]}" -p boxsock-agent --bin boxsock-agent
        AGENT="target/$profile/boxsock-agent"
    fi
fi
[ -f "$AGENT" ] || die "no agent at $AGENT"

args=("$dir" "$AGENT")
[ -n "${BUSYBOX:-}" ] && args+=(--busybox "$BUSYBOX")
cargo run -q "${profile_flag[@]}" -p boxsock-libkrun --example guest-root -- "${args[@]}"
