//! macOS: not implemented. Never compiled in CI (no darwin target is built anywhere;
//! docs/platforms.md). The agent as a macOS host process (the `host` backend there)
//! would need neither vsock nor the guest modules, but peer checks with a pid (the
//! core's) and this crate's addresses are Linux-only today.

compile_error!(
    "boxsock-agent: vsock (AF_VSOCK), the guest network (guestnet: netlink, DHCP) and \
     the guest root (guestroot: mount, chroot) are Linux-only, and the agent is not \
     implemented for macOS yet; see docs/platforms.md"
);
