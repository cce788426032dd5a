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

/// A target the project holds itself to: `numerator / denominator <= max`, both
/// criterion benchmark ids (`group/function/parameter`).
pub struct Target {
    /// What it means, for the table.
    pub what: &'static str,
    /// Benchmark measured.
    pub numerator: &'static str,
    /// Floor it is compared with.
    pub denominator: &'static str,
    /// Largest acceptable ratio.
    pub max: f64,
}

/// The targets of issue "Criterion benches" (ratios measured in one run).
pub const TARGETS: &[Target] = &[
    Target { what: "short-symlink steady ensure vs one lstat", numerator: "ensure/short-symlink/steady", denominator: "ensure/floor-lstat/steady", max: 1.3 },
    Target { what: "bind via short-symlink vs direct short path (shallow home)", numerator: "bind/short-symlink/shallow", denominator: "bind/floor-direct-short/shallow", max: 1.05 },
    Target { what: "bind via short-symlink vs direct short path (300-byte home)", numerator: "bind/short-symlink/300B", denominator: "bind/floor-direct-short/300B", max: 1.05 },
    Target { what: "connect via short-symlink vs direct short path (shallow home)", numerator: "connect/short-symlink/shallow", denominator: "connect/floor-direct-short/shallow", max: 1.05 },
    Target { what: "connect via short-symlink vs direct short path (300-byte home)", numerator: "connect/short-symlink/300B", denominator: "connect/floor-direct-short/300B", max: 1.05 },
    Target { what: "abstract bind vs filesystem bind", numerator: "bind/abstract/shallow", denominator: "bind/floor-direct-short/shallow", max: 0.3 },
    Target { what: "short-symlink sweep of 10 000 entries vs readdir", numerator: "sweep/short-symlink/10000", denominator: "sweep/floor-readdir/10000", max: 3.0 },
];
