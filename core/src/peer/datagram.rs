//! Datagrams checked one by one on the credentials the kernel attaches to each
//! (`SCM_CREDENTIALS`), failing closed without them.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use super::{PeerCred, PeerPolicy};
use crate::address::SocketAddress;
use crate::error::BindingError;

/// Receive one datagram on `sock` into `buf` and check its sender against `policy`
/// using the `SCM_CREDENTIALS` the kernel attached to it (`SO_PASSCRED` must be on; see
/// [`set_pass_cred`](super::set_pass_cred)). The kernel fills these in for every sender and refuses forged
/// ones from unprivileged processes, so unlike `SO_PEERCRED` this works per message on
/// unconnected datagram sockets.
///
/// Returns the length and the sender's credentials (`None` only for an unchecked policy
/// and a datagram without credentials). A rejected datagram is consumed,
/// logged and counted, and reported as [`BindingError::PeerRejected`]: call again for
/// the next one. A datagram without credentials is refused with
/// [`BindingError::Insecure`] (fail closed). A checked policy with no `SO_PASSCRED`
/// therefore refuses everything. A datagram longer than `buf` is truncated, as with
/// `recv`.
pub fn recv_checked(
    sock: &UnixDatagram,
    buf: &mut [u8],
    policy: &PeerPolicy,
    socket: &str,
    address: &SocketAddress,
) -> Result<(usize, Option<PeerCred>), BindingError> {
    let (len, cred) = crate::sys::recv_with_cred(sock, buf)
        .map_err(|e| BindingError::errno("receive on", address, e))?;
    let Some(cred) = cred else {
        if !policy.is_checked() {
            return Ok((len, None));
        }
        policy.note_rejection(
            socket,
            address,
            None,
            "rejected datagram without sender credentials (SO_PASSCRED off?)",
        );
        return Err(BindingError::Insecure {
            path: io_path(address),
            reason: format!(
                "a datagram on socket {socket:?} carries no SCM_CREDENTIALS, so its sender cannot be checked; enable SO_PASSCRED before receiving"
            ),
        });
    };
    let cred = policy.check_cred(cred, socket, address)?;
    Ok((len, Some(cred)))
}

/// `Insecure.path` for a datagram address (`@name` for an abstract one); `Io` errors
/// carry the address itself.
fn io_path(addr: &SocketAddress) -> PathBuf {
    PathBuf::from(addr.display_string())
}
