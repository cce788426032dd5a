//! Workspace-level integration tests for boxsock live in `tests/`. This library holds
//! what they share: the reliability scenario registry that `docs/reliability.md` is
//! generated from.

pub mod reliability;

// The facade links every strategy and backend it depends on; the tests take their
// lists from `boxsock::builtin_strategies()` / `builtin_backends()` (one registry).
use boxsock as _;
