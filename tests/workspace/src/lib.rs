//! Workspace-level integration tests for boxsock live in `tests/`. This library holds
//! what they share: the reliability scenario registry that `docs/reliability.md` is
//! generated from.

pub mod reliability;

// Name every strategy and backend crate so `inventory` links their registrations into
// every test binary that uses this library.
use boxsock_abstract as _;
use boxsock_direct as _;
use boxsock_host as _;
use boxsock_libkrun as _;
use boxsock_short_symlink as _;
