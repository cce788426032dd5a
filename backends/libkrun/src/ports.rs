//! Published ports (`-p`): the passt options that forward them and the check that each
//! host port is free, naming its holder. The code is the core's
//! ([`boxsock_core::ports`]), shared with the sandbox backend's pasta.

pub use boxsock_core::ports::*;
