//! Linux: vsock sockets, the guest's network and its overlay root.

pub mod guestnet;
pub mod guestroot;
pub mod vsock;
