//! The in-box agent (work in progress).
fn main() {}
