//! `boxsock-oci`: a runc-compatible OCI runtime over boxsock's runtime, so that the
//! engines users already run (podman through conmon, containerd through its runc shim,
//! and Kubernetes through either) start boxes.
//!
//! The binary (`src/main.rs`) only parses the command line (youki's `liboci-cli`, the
//! surface runc has) and calls [`ops`]; everything the tests check is here:
//!
//! - [`spec`]: a bundle's `config.json` (youki's `oci-spec` types) made into a box:
//!   what maps, what is ignored because engines always set it and the box provides its
//!   own, and what is refused, naming the field.
//! - [`state`]: the state directory under `--root`: boxsock's home (its socket
//!   strategies keep every box socket short, however deep an engine's `--root` is) and
//!   one directory per container.
//! - [`supervise`]: the process engines supervise (the pid of `--pid-file`): it holds
//!   the command's stdio, starts on `start`, forwards signals, and exits with the
//!   command's status (128+N for a signal).
//! - [`ops`]: the commands (`create`, `start`, `state`, `kill`, `delete`, `exec`,
//!   `features`, `ps`).

pub mod error;
pub mod ops;
pub mod spec;
pub mod state;
pub mod supervise;

pub use error::OciError;
