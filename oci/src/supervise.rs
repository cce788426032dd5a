//! The process engines supervise: see the crate documentation.
