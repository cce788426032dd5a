//! The name libkrun derives for a unixgram network backend, pinned.
//!
//! libkrun 1.19.x (`krun-devices`, `src/virtio/net/unixgram.rs`) binds the local end of
//! a unixgram backend at `std::env::temp_dir().join(format!("krun-net-{}-{}.sock",
//! process::id(), NET_SOCK_COUNTER))`, the counter an `AtomicU32`. libkrun ≤ 1.18
//! appended `-krun.sock` to the peer path instead. The test `tests/pin_derived_name.rs`
//! reads the resolved `krun-devices` source and fails if that rule changes.
//!
//! **Why stream mode still counts it.** boxsock connects passt with
//! `krun_add_net_unixstream`, which binds no local name in 1.19.7. The `net` socket still
//! declares this derived name, because the catalogue describes the logical socket, not
//! one transport: the unixgram transport (gvproxy, vfkit — the macOS route) binds it in
//! the same `TMPDIR`, and a budget that only holds for one transport is the dead zone
//! this project exists to remove. It costs 24 bytes more than `net.sock`, which the
//! short-symlink address has room for (see `docs/backends.md`).

use boxsock_core::catalogue::{self, DerivedName, SocketSpec};

/// Linux `PID_MAX_LIMIT` on 64-bit: the largest pid `process::id()` can return.
pub const PID_MAX_LIMIT: u32 = 4_194_304;

/// The worst-case derived name: `krun-net-<PID_MAX_LIMIT>-<u32::MAX>.sock` (32 bytes).
/// Re-derive it if `tests/pin_derived_name.rs` fails.
pub const KRUN_NET_DERIVED_WORST_CASE: &str = "krun-net-4194304-4294967295.sock";

/// The `net` socket as libkrun sees it: bound by passt, with the unixgram name libkrun
/// 1.19 derives in `TMPDIR` counted in every budget. The one place that names the
/// derived name for a budget: the backend's socket list and the shim's own check
/// ([`crate::ShimSpec::validate`]) both read it from here.
pub const NET: SocketSpec =
    SocketSpec { derived: &[DerivedName::Sibling(KRUN_NET_DERIVED_WORST_CASE)], ..catalogue::NET };

/// The libkrun version whose rule [`KRUN_NET_DERIVED_WORST_CASE`] was derived from.
pub const LIBKRUN_PINNED_VERSION: &str = "1.19.7";
