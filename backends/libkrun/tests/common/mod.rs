//! Test fixture: a home (optionally deep) with one box, bound through the
//! `short-symlink` strategy (`<base>/boxsock-<uid>/<id>` -> `<home>/boxes/<id>/sockets`)
//! with `StrategyConfig::base_dir` a fresh temp dir. While that strategy is not yet
//! registered (it lands in main separately), the same shape is made by hand.
#![allow(dead_code)]

use boxsock_core::registry::{Registry, StrategyRegistration};
use boxsock_core::{SocketBinding, StrategyConfig};
use boxsock_short_symlink as _;
use std::sync::Arc;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use boxsock_core::backend::LaunchSpec;
use boxsock_core::binding::PolicyIntent;
use boxsock_core::{BoxId, BoxLayout, PolicyAccess, PolicyPath, SocketAddress, boxdir};

pub struct Fixture {
    pub home_dir: tempfile::TempDir,
    pub base_dir: tempfile::TempDir,
    pub layout: BoxLayout,
    pub id: BoxId,
    /// `<base>/boxsock-<uid>/<id>`: the link.
    pub link: PathBuf,
    /// The registered short-symlink strategy, once it is linked.
    pub strategy: Option<Arc<dyn SocketBinding>>,
}

impl Fixture {
    /// `depth`: extra bytes of home path (a deep home makes direct paths too long).
    pub fn new(depth: usize) -> Fixture {
        let home_dir = tempfile::tempdir().unwrap();
        let mut home = home_dir.path().to_path_buf();
        let mut left = depth;
        while left > 0 {
            let n = left.min(60);
            home.push("d".repeat(n));
            left -= n;
        }
        std::fs::create_dir_all(&home).unwrap();
        let layout = BoxLayout::new(&home);
        let id = BoxId::generate();
        boxdir::create_box_dirs(&layout, &id).unwrap();
        std::fs::create_dir_all(layout.rootfs_dir(&id)).unwrap();
        let base_dir = tempfile::Builder::new().prefix("bs").tempdir_in("/tmp").unwrap();
        let config =
            StrategyConfig { base_dir: base_dir.path().to_path_buf(), ..StrategyConfig::default() };
        let strategy =
            Registry::<StrategyRegistration>::collected().build("short-symlink", &config).ok();
        let link = match strategy
            .as_ref()
            .and_then(|s| s.inspect_box(&layout, &id).ok()?.binding_path())
        {
            Some(l) => l,
            None => {
                let per_uid = config.per_uid_dir();
                std::fs::create_dir(&per_uid).unwrap();
                per_uid.join(id.as_str())
            }
        };
        Fixture { home_dir, base_dir, layout, id, link, strategy }
    }

    /// The box opened for use through `s` (its link made, its directory verified).
    fn open(&self, s: &Arc<dyn SocketBinding>) -> Arc<dyn boxsock_core::BoxBinding> {
        let opening = boxsock_core::Opening::Use;
        s.clone().open_box(&self.layout, &self.id, opening, &[]).unwrap()
    }

    pub fn ensure(&self) {
        if let Some(s) = &self.strategy {
            return drop(self.open(s));
        }
        if std::fs::symlink_metadata(&self.link).is_err() {
            std::os::unix::fs::symlink(self.layout.sockets_dir(&self.id), &self.link).unwrap();
        }
    }

    pub fn addr(&self, name: &str) -> PathBuf {
        if let Some(s) = &self.strategy {
            if let Ok(a) = s.inspect_box(&self.layout, &self.id).and_then(|b| b.derive(name)) {
                return a.as_path().expect("short-symlink gives paths").to_path_buf();
            }
        }
        self.link.join(name)
    }

    pub fn policy(&self) -> Vec<PolicyPath> {
        if let Some(s) = &self.strategy {
            return s.inspect_box(&self.layout, &self.id).unwrap().policy_paths().unwrap();
        }
        vec![PolicyPath {
            path: self.link.clone(),
            intent: PolicyIntent::SymlinkToDirectory { target: self.layout.sockets_dir(&self.id) },
            access: PolicyAccess::Sockets,
        }]
    }

    pub fn launch_spec(&self, network: bool) -> LaunchSpec {
        let mut addresses = BTreeMap::new();
        for n in ["agent", "ready"] {
            addresses.insert(n.to_owned(), SocketAddress::Path(self.addr(&format!("{n}.sock"))));
        }
        if network {
            addresses.insert("net".to_owned(), SocketAddress::Path(self.addr("net.sock")));
        }
        LaunchSpec {
            id: self.id.clone(),
            layout: self.layout.clone(),
            sockets: boxsock_core::backend::BoxSockets::new(
                addresses,
                None,
                boxsock_core::peer::PeerPolicy::unchecked(),
            ),
            log_file: self.layout.log_file(&self.id),
            network,
            policy: self.policy(),
            env: vec![("BOXSOCK_TEST".into(), "1".into())],
            settings: Default::default(),
        }
    }

    /// [`Fixture::launch_spec`] with the verified socket directory the runtime would
    /// hand over (the strategy's `socket_dir`, after `ensure`).
    pub fn launch_spec_verified(&self, network: bool) -> LaunchSpec {
        let mut spec = self.launch_spec(network);
        let s = self.strategy.as_ref().expect("short-symlink is registered");
        spec.sockets.dir = self.open(s).dir().cloned();
        assert!(spec.sockets.dir.is_some());
        spec
    }

    pub fn home(&self) -> &Path {
        self.layout.home()
    }
}

/// Whether `pid` is gone (not even a zombie of ours).
pub fn gone(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
}
