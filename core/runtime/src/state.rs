//! The box state machine.
//!
//! ```text
//! Created ──> Starting ──> Running ──> Stopping ──> Stopped
//!                │            │                       │  ▲
//!                │            └──> Unhealthy ─────────┼──┘
//!                └───────────────────────────────────>┘   (failed start)
//!                     ▲                               │
//!                     └───────── restart ─────────────┘
//! ```
//!
//! Every transition the runtime makes goes through [`BoxState::check_transition`], and
//! the store applies it only if the row is still in the state the caller saw, inside one
//! transaction. Anything else is [`IllegalTransition`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The lifecycle state of a box, as persisted in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoxState {
    /// Directories, row and binding exist; no process was ever started.
    Created,
    /// The backend was asked to launch; readiness not yet confirmed.
    Starting,
    /// The agent reported ready and the process is alive.
    Running,
    /// The process died while it was supposed to be running (observed by the health
    /// monitor or at recovery); the runtime records the exit and moves on to `Stopped`.
    Unhealthy,
    /// A stop is in progress.
    Stopping,
    /// No process; the box can be started again or removed.
    Stopped,
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal box state transition {from} -> {to}")]
pub struct IllegalTransition {
    /// Current state.
    pub from: BoxState,
    /// Requested state.
    pub to: BoxState,
}

impl BoxState {
    /// Every state, in lifecycle order.
    pub const ALL: [BoxState; 6] = [
        BoxState::Created,
        BoxState::Starting,
        BoxState::Running,
        BoxState::Unhealthy,
        BoxState::Stopping,
        BoxState::Stopped,
    ];

    /// The stored / printed form.
    pub const fn as_str(self) -> &'static str {
        match self {
            BoxState::Created => "created",
            BoxState::Starting => "starting",
            BoxState::Running => "running",
            BoxState::Unhealthy => "unhealthy",
            BoxState::Stopping => "stopping",
            BoxState::Stopped => "stopped",
        }
    }

    /// Whether the state machine allows `self -> to`.
    pub const fn can_transition(self, to: BoxState) -> bool {
        use BoxState::*;
        matches!(
            (self, to),
            (Created, Starting)
                | (Stopped, Starting)
                | (Starting, Running)
                | (Starting, Stopping)
                | (Starting, Stopped)
                | (Running, Stopping)
                | (Running, Unhealthy)
                | (Unhealthy, Stopping)
                | (Unhealthy, Stopped)
                | (Stopping, Stopped)
        )
    }

    /// [`BoxState::can_transition`] as a `Result`.
    pub fn check_transition(self, to: BoxState) -> Result<(), IllegalTransition> {
        if self.can_transition(to) { Ok(()) } else { Err(IllegalTransition { from: self, to }) }
    }

    /// Whether a process may exist for a box in this state.
    pub const fn has_process(self) -> bool {
        matches!(
            self,
            BoxState::Starting | BoxState::Running | BoxState::Unhealthy | BoxState::Stopping
        )
    }
}

impl fmt::Display for BoxState {
    /// Honours width and alignment (`{:<12}`), so tables line up.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A string that names no [`BoxState`] (a corrupt store row).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown box state {}", boxsock_core::echo::echo(found))]
pub struct UnknownState {
    /// What was found.
    pub found: String,
}

impl FromStr for BoxState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, UnknownState> {
        BoxState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState { found: s.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BoxState::*;

    #[test]
    fn every_state_round_trips_and_an_unknown_one_is_a_typed_error_naming_it() {
        for st in BoxState::ALL {
            assert_eq!(st.as_str().parse::<BoxState>(), Ok(st));
        }
        let e = "runnning".parse::<BoxState>().unwrap_err();
        assert_eq!(e, UnknownState { found: "runnning".into() });
        assert_eq!(e.to_string(), "unknown box state \"runnning\"");
    }

    #[test]
    fn display_honours_width_and_alignment() {
        assert_eq!(format!("[{:<10}]", Running), "[running   ]");
        assert_eq!(format!("[{:>8}]", Stopped), "[ stopped]");
    }

    #[test]
    fn lifecycle_paths_are_allowed() {
        for path in [
            &[Created, Starting, Running, Stopping, Stopped][..],
            &[Running, Unhealthy, Stopped],
            &[Stopped, Starting, Running],
            &[Starting, Stopped],
        ] {
            for w in path.windows(2) {
                assert!(w[0].can_transition(w[1]), "{} -> {}", w[0], w[1]);
            }
        }
    }

    #[test]
    fn illegal_transitions_are_refused_with_both_states() {
        for (from, to) in [
            (Created, Running),
            (Stopped, Running),
            (Running, Created),
            (Running, Running),
            (Stopped, Stopped),
            (Unhealthy, Running),
        ] {
            let e = from.check_transition(to).unwrap_err();
            assert_eq!(e, IllegalTransition { from, to });
            assert!(e.to_string().contains(from.as_str()) && e.to_string().contains(to.as_str()));
        }
        // Exactly the ten documented edges exist.
        let n = BoxState::ALL
            .iter()
            .flat_map(|a| BoxState::ALL.iter().map(move |b| (a, b)))
            .filter(|(a, b)| a.can_transition(**b))
            .count();
        assert_eq!(n, 10);
    }

    #[test]
    fn string_round_trip() {
        for s in BoxState::ALL {
            assert_eq!(s.as_str().parse::<BoxState>().unwrap(), s);
        }
        assert!("bogus".parse::<BoxState>().is_err());
    }
}
