//! Shared set-up for boxsock's criterion benches: homes of a chosen depth, link bases,
//! the strategies under test, and the ratio report's table of targets.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use boxsock_core::registry::{Registry, StrategyRegistration};
use boxsock_core::{BoxId, BoxLayout, SocketBinding, StrategyConfig};

// Name every strategy crate so `inventory` links their registrations.
use boxsock_abstract as _;
use boxsock_direct as _;
use boxsock_short_symlink as _;

/// A home of (at least) `depth` bytes under `root`, created on disk.
pub fn home_of_len(root: &Path, depth: usize) -> PathBuf {
    let mut p = root.to_path_buf();
    let mut i = 0;
    while p.as_os_str().len() + 1 < depth {
        let room = depth - p.as_os_str().len() - 1;
        let seg = room.clamp(1, 200);
        p.push(format!("{}{}", i % 10, "h".repeat(seg.saturating_sub(1))));
        i += 1;
    }
    std::fs::create_dir_all(&p).expect("create home");
    p
}

/// One box of one strategy, ready to bench: its home, id and a built strategy.
pub struct Subject {
    /// Strategy name.
    pub name: &'static str,
    /// The strategy.
    pub strategy: Arc<dyn SocketBinding>,
    /// The home layout.
    pub layout: BoxLayout,
    /// The box.
    pub id: BoxId,
}

impl Subject {
    /// Build `reg` against `home` with links under `base`, create the box dirs and
    /// ensure once. `None` when the strategy cannot serve this home (its reason is
    /// printed), e.g. `direct` under a deep home.
    pub fn new(reg: &StrategyRegistration, home: &Path, base: &Path) -> Option<Subject> {
        let config = StrategyConfig { base_dir: base.to_path_buf(), ..StrategyConfig::default() };
        let strategy = match (reg.build)(&config) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipped {}: {e}", reg.name);
                return None;
            }
        };
        std::fs::create_dir_all(home).expect("create home");
        let layout = BoxLayout::new(home);
        let id = BoxId::generate();
        boxsock_core::boxdir::create_box_dirs(&layout, &id).expect("box dirs");
        if let Err(e) = strategy.ensure(&layout, &id).and_then(|()| strategy.address(&layout, &id, "agent.sock").map(drop)) {
            eprintln!("skipped {} under a {}-byte home: {e}", reg.name, home.as_os_str().len());
            return None;
        }
        Some(Subject { name: reg.name, strategy, layout, id })
    }
}

/// Every strategy linked into the benches, sorted by name.
pub fn strategies() -> Vec<&'static StrategyRegistration> {
    let reg = Registry::<StrategyRegistration>::collected();
    reg.names().into_iter().filter_map(|n| reg.get(n).ok()).collect()
}

/// What a target compares.
pub enum Limit {
    /// `numerator / denominator <= max`, both measured in the same run.
    Ratio {
        /// The floor's benchmark id.
        denominator: &'static str,
        /// Largest acceptable ratio.
        max: f64,
    },
    /// The numerator's median is at most this many milliseconds (the only absolute
    /// target: a box's whole life must feel instant to a person).
    MedianMs(f64),
}

/// A target the project holds itself to.
pub struct Target {
    /// What it means, for the table.
    pub what: &'static str,
    /// Benchmark measured (`group/function/parameter`).
    pub numerator: &'static str,
    /// What it is compared with.
    pub limit: Limit,
}

const fn ratio(what: &'static str, numerator: &'static str, denominator: &'static str, max: f64) -> Target {
    Target { what, numerator, limit: Limit::Ratio { denominator, max } }
}

/// The targets of issue "Criterion benches" (ratios measured in one run).
pub const TARGETS: &[Target] = &[
    ratio("short-symlink steady ensure vs one lstat", "ensure/short-symlink/steady", "ensure/floor-lstat~short-symlink/steady", 1.3),
    ratio("bind via short-symlink vs direct short path (shallow home)", "bind/short-symlink/shallow", "bind/floor-direct-short~short-symlink/shallow", 1.05),
    ratio("bind via short-symlink vs direct short path (300-byte home)", "bind/short-symlink/300B", "bind/floor-direct-short~short-symlink/300B", 1.05),
    ratio("connect via short-symlink vs direct short path (shallow home)", "connect/short-symlink/shallow", "connect/floor-direct-short~short-symlink/shallow", 1.05),
    ratio("connect via short-symlink vs direct short path (300-byte home)", "connect/short-symlink/300B", "connect/floor-direct-short~short-symlink/300B", 1.05),
    ratio("abstract bind vs filesystem bind", "bind/abstract/shallow", "bind/floor-direct-short~abstract/shallow", 0.3),
    ratio("short-symlink sweep of 10 000 entries vs readdir", "sweep/short-symlink/10000", "sweep/floor-readdir/10000", 3.0),
    Target { what: "host backend: create→ready→exec→remove, p50", numerator: "runtime/host-short-symlink/one", limit: Limit::MedianMs(50.0) },
];
