//! Non-Linux targets: abstract sockets do not exist, so building the strategy fails.

use std::sync::Arc;

use boxsock_core::{BindingError, SocketBinding, StrategyConfig};

/// Always [`BindingError::Unsupported`]: abstract Unix sockets are a Linux feature.
pub fn build(_config: &StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError> {
    Err(BindingError::Unsupported {
        strategy: crate::NAME.into(),
        what: "this platform".into(),
        reason: format!(
            "abstract Unix socket names exist only on Linux (this is {}); use short-symlink",
            std::env::consts::OS
        ),
    })
}
