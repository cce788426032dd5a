//! The built-in strategies are all linked and registered, each exactly once.

use boxsock_abstract as _;
use boxsock_direct as _;
use boxsock_short_symlink as _;

use boxsock_core::registry::{Registry, RegistryError, StrategyRegistration};

const BUILT_IN: [&str; 3] = ["abstract", "direct", "short-symlink"];

#[test]
fn built_in_strategies_are_registered_once() {
    let registry = Registry::<StrategyRegistration>::collected();
    let names = registry.names();
    for name in BUILT_IN {
        assert!(
            names.contains(&name),
            "strategy {name:?} is not registered; registered: {names:?}"
        );
        let reg = registry.get(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(reg.name, name);
        assert!(!reg.summary.is_empty(), "{name} has no summary");
    }
    let all: Vec<&str> = registry.iter().map(|r| r.name).collect();
    for name in &all {
        assert_eq!(
            all.iter().filter(|n| *n == name).count(),
            1,
            "{name} is registered more than once"
        );
    }
    registry.check_unique().expect("names are unique");
}

#[test]
fn unknown_strategy_is_a_clear_error() {
    let registry = Registry::<StrategyRegistration>::collected();
    match registry.get("no-such-strategy") {
        Err(RegistryError::Unknown { name, known, .. }) => {
            assert_eq!(name, "no-such-strategy");
            assert!(known.contains(&"direct"), "{known:?}");
        }
        other => panic!("expected Unknown, got {other:?}"),
    }
}
