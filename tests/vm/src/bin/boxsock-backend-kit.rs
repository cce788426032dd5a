//! `boxsock-backend-kit`: the backend conformance kit (`boxsock-backend-conformance`) as
//! a command, over every backend linked into it (`libkrun`, `host`). The real-VM tier
//! copies it into its image and runs it as scenario `backend-kit`:
//!
//! ```text
//! boxsock-backend-kit --backend libkrun --home DIR --helper-dir DIR \
//!     --backend-option read_only=DIR --backend-option agent=PATH --network
//! ```
//!
//! One line per check (`check <name>: pass|skip <reason>|FAIL <message>`), then
//! `summary pass=N fail=N skip=N`; exit 0 when nothing failed. See
//! `boxsock_backend_conformance::cli`.

// The linking rule: name the backend crates, or their registrations are not linked.
use boxsock_host as _;
use boxsock_libkrun as _;

use boxsock_core::registry::{BackendRegistration, Registry};

fn main() {
    let backends = Registry::<BackendRegistration>::collected();
    std::process::exit(boxsock_backend_conformance::cli::main_with(
        &backends,
        std::env::args().skip(1),
    ));
}
