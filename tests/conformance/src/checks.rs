//! The checks. Each is a plain public function taking a [`Kit`]; it panics with a message
//! naming the strategy, the socket and the path when the strategy breaks the contract.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use boxsock_core::binding::{CrossUserProtection, PolicyIntent};
use boxsock_core::catalogue::{self, SocketSpec};
use boxsock_core::peer::Listener;
use boxsock_core::{
    BindingError, BoxId, BoxLayout, Opening, Platform, PolicyAccess, SocketAddress, SocketBinding,
    boxdir, budget,
};

use crate::Outcome;
use crate::child;
use crate::fork::{self, PeerKind, PeerReport};
use crate::harness::Kit;
use crate::util::{self, ByFile, budget_names, dev_ino, exists_nofollow, ok, snapshot};

const AGENT: &str = "agent.sock";
const LONGEST: &str = util::LONGEST_LABEL;

/// A home with one box whose binding is ensured.
fn setup(k: &Kit) -> (BoxLayout, BoxId) {
    let layout = k.harness.new_home();
    let id = k.harness.new_box(&layout);
    ok("ensure", k.strategy.ensure(&layout, &id));
    (layout, id)
}

fn sname(k: &Kit) -> String {
    k.strategy.name().to_owned()
}

fn round_trip_spec(k: &Kit, spec: SocketSpec) -> Outcome {
    let (layout, id) = setup(k);
    for (_, name) in spec.all_file_names() {
        util::stream_round_trip(&k.strategy, &layout, &id, &name);
    }
    Outcome::Passed
}

/// Bind and connect the standard `agent` socket; bytes go both ways.
pub fn round_trip_agent(k: &Kit) -> Outcome {
    round_trip_spec(k, catalogue::AGENT)
}

/// Bind and connect the standard `ready` socket; bytes go both ways.
pub fn round_trip_ready(k: &Kit) -> Outcome {
    round_trip_spec(k, catalogue::READY)
}

/// Bind and connect the standard `net` socket; bytes go both ways.
pub fn round_trip_net(k: &Kit) -> Outcome {
    round_trip_spec(k, catalogue::NET)
}

/// Bind and connect at each name libkrun derives (`net.sock-krun.sock`,
/// `krun-net-<pid>-<n>.sock`) and at a name of the longest allowed length.
pub fn round_trip_derived_names(k: &Kit) -> Outcome {
    let (layout, id) = setup(k);
    for (label, name) in
        budget_names().into_iter().filter(|(l, _)| l.contains("derived") || l.contains("longest"))
    {
        let _l = util::stream_round_trip(&k.strategy, &layout, &id, &name);
        eprintln!("  {}: {label} ok", sname(k));
    }
    Outcome::Passed
}

/// Two datagram sockets (`net.sock` and its derived `net.sock-krun.sock`, as gvproxy and
/// libkrun use them) exchange a datagram each way; replies go to the sender's address.
pub fn datagram_round_trip(k: &Kit) -> Outcome {
    let (layout, id) = setup(k);
    let s = &k.strategy;
    let (a_name, b_name) = ("net.sock", "net.sock-krun.sock");
    let a = ok("bind_datagram(net.sock)", s.bind_datagram(&layout, &id, a_name));
    let b = ok("bind_datagram(net.sock-krun.sock)", s.bind_datagram(&layout, &id, b_name));
    for d in [&a, &b] {
        d.set_read_timeout(Some(util::IO_TIMEOUT)).expect("timeout");
    }
    let b_addr = ok("address", s.address(&layout, &id, b_name));
    a.send_to_addr(b"frame", &b_addr.to_std().expect("std address"))
        .expect("send to the derived socket");
    let mut buf = [0u8; 16];
    let (n, from) = b.recv_from(&mut buf).expect("receive on the derived socket");
    assert_eq!(&buf[..n], b"frame");
    b.send_to_addr(b"reply", &from).expect("reply to the sender's address");
    let n = a.recv(&mut buf).expect("receive the reply");
    assert_eq!(&buf[..n], b"reply");
    Outcome::Passed
}

/// For every budget name at `layout`: either the address fits (and, when the home is
/// real, really binds), or — only for strategies that do not claim
/// `home_length_independent` — `address` fails fast with `PathTooLong` naming the socket,
/// the path, its length and the limit, and exactly the addresses over the limit fail.
fn fit_or_fail_fast(
    k: &Kit,
    layout: &BoxLayout,
    id: &BoxId,
    realized: bool,
    names: &[(String, String)],
) -> Vec<String> {
    let caps = k.caps();
    let s = &k.strategy;
    let limit = Platform::current().sun_len();
    let home_len = layout.home().as_os_str().len();
    let mut ensured = false;
    if realized {
        k.harness.create_box(layout, id);
        match s.ensure(layout, id) {
            Ok(()) => ensured = true,
            Err(BindingError::PathTooLong { .. }) if !caps.home_length_independent => {}
            Err(e) => panic!("{}: home of {home_len} bytes: ensure failed: {e} ({e:?})", s.name()),
        }
    }
    let mut refused = Vec::new();
    for (label, name) in names {
        match s.address(layout, id, name) {
            Ok(addr) => {
                assert!(
                    budget::fits_in(&addr, limit),
                    "{}: home of {home_len} bytes: {label}: address {addr} is {} bytes and does not fit sun_path ({limit} with NUL)",
                    s.name(),
                    addr.byte_len()
                );
                if ensured {
                    let sock = ok(
                        &format!("home of {home_len} bytes: bind {label} at {addr}"),
                        s.bind_datagram(layout, id, name),
                    );
                    drop(sock);
                    if let Some(p) = addr.as_path() {
                        let _ = std::fs::remove_file(p);
                    }
                }
            }
            Err(e) => {
                let BindingError::PathTooLong { socket, path, len, limit: l } = &e else {
                    panic!(
                        "{}: home of {home_len} bytes: address({name}) failed: {e} ({e:?})",
                        s.name()
                    );
                };
                assert!(
                    !caps.home_length_independent || label.contains(LONGEST),
                    "{}: claims home_length_independent but refused {label} for a home of {home_len} bytes: {e}",
                    s.name()
                );
                assert_eq!(*l, limit, "PathTooLong must carry the platform's sun_path size");
                assert_eq!(
                    *len,
                    path.len(),
                    "PathTooLong's len must be the byte length of its path {path:?}"
                );
                assert!(
                    len + 1 > limit,
                    "{}: refused {label} at {path} ({len} bytes), which fits {limit}",
                    s.name()
                );
                assert!(
                    path.ends_with(name.as_str()),
                    "PathTooLong's path {path:?} should be the address of {name}"
                );
                assert!(!socket.is_empty(), "PathTooLong must name the socket");
                let msg = e.to_string();
                // The path as every message shows one: quoted, escaped, bounded.
                let shown = boxsock_core::echo::os(std::ffi::OsStr::new(path.as_str())).to_string();
                for part in [shown.as_str(), &len.to_string(), &l.to_string()] {
                    assert!(msg.contains(part), "PathTooLong's message {msg:?} must name {part:?}");
                }
                refused.push(name.clone());
            }
        }
    }
    refused
}

/// Every address and every derived name fits for homes of 1, 50, 104, 200, 1000 and 4000
/// bytes (or fails fast with a complete `PathTooLong`, for strategies that do not claim
/// home-length independence). Homes that can be made on disk are, and every address that
/// is handed out is really bound. The id is the longest allowed (32 bytes). A file name of
/// the longest allowed length (48 bytes) may not fit a strategy whose base directory is
/// the harness's (longer than `/tmp`), but for a home-length-independent strategy whether
/// it fits must not depend on the home.
pub fn addresses_fit_every_home_length(k: &Kit) -> Outcome {
    let names = budget_names();
    let mut longest_refused: Vec<(usize, bool)> = Vec::new();
    for len in [1usize, 50, 104, 200, 1000, 4000] {
        let id = k.harness.longest_id(); // one box per home: the same id in two homes is another check
        let (layout, realized) = match k.harness.home_of_len(len) {
            Some(l) => (l, true),
            None => {
                // Too short to be made under the harness root ("/" for one byte): only
                // address arithmetic is checked, which the contract says is pure for
                // path strategies.
                if !k.caps().path_addressable {
                    eprintln!(
                        "  {}: home of {len} bytes cannot be made in a temp dir; not checked",
                        sname(k)
                    );
                    continue;
                }
                let mut p = String::from("/");
                p.push_str(&"z".repeat(len.saturating_sub(1)));
                (BoxLayout::new(p), false)
            }
        };
        assert_eq!(layout.home().as_os_str().len(), len);
        let refused = fit_or_fail_fast(k, &layout, &id, realized, &names);
        let longest = &names.iter().find(|(l, _)| l.contains(LONGEST)).expect("listed").1;
        longest_refused.push((len, refused.contains(longest)));
        eprintln!(
            "  {}: home of {len} bytes: {} fit, refused {refused:?}",
            sname(k),
            names.len() - refused.len()
        );
    }
    if k.caps().home_length_independent {
        let first = longest_refused[0].1;
        assert!(
            longest_refused.iter().all(|(_, r)| *r == first),
            "{}: claims home_length_independent, but whether the longest name fits depends on the home: {longest_refused:?}",
            sname(k)
        );
    }
    Outcome::Passed
}

/// Homes for which `<home>/boxes/<id>/sockets/agent.sock` is 103, 104, 107 and 108 bytes:
/// the boundaries of both platforms' limits. Whatever fits must bind, whatever is refused
/// must really be over the limit.
pub fn budget_boundaries_103_104_107_108(k: &Kit) -> Outcome {
    let names = vec![("agent".to_owned(), AGENT.to_owned())];
    for n in [103usize, 104, 107, 108] {
        let id = BoxId::generate();
        let tail = "/boxes/".len() + id.as_str().len() + "/sockets/".len() + AGENT.len();
        let layout = k.harness.home_of_len(n - tail).expect("a home of ~70 bytes can be made");
        assert_eq!(layout.sockets_dir(&id).join(AGENT).as_os_str().len(), n);
        fit_or_fail_fast(k, &layout, &id, true, &names);
    }
    Outcome::Passed
}

/// Ensuring three more times changes nothing: the same binding entry (same inode, same
/// target), and the sockets still work.
pub fn ensure_is_idempotent(k: &Kit) -> Outcome {
    let (layout, id) = setup(k);
    let before = binding_state(k, &layout, &id);
    let witness =
        k.strategy.binding_path(&layout, &id).and_then(|p| Some((util::Witness::of(&p)?, p)));
    let dir_before = k.strategy.binding_dir().map(|d| snapshot(&d));
    for _ in 0..3 {
        ok("repeated ensure", k.strategy.ensure(&layout, &id));
    }
    ok("ensure by a fresh instance", k.fresh().ensure(&layout, &id));
    assert_eq!(
        binding_state(k, &layout, &id),
        before,
        "{}: a repeated ensure changed the binding",
        sname(k)
    );
    if let Some((w, p)) = witness {
        assert!(
            w.unchanged(&p),
            "{}: a repeated ensure removed and re-created {}",
            sname(k),
            p.display()
        );
    }
    if let (Some(d), Some(b)) = (k.strategy.binding_dir(), dir_before) {
        let after = snapshot(&d);
        assert!(
            b == after,
            "{}: a repeated ensure changed {}:\n{}",
            sname(k),
            d.display(),
            util::diff(&b, &after)
        );
    }
    util::stream_round_trip(&k.strategy, &layout, &id, AGENT);
    Outcome::Passed
}

/// (inode, link target) of the binding entry, if the strategy has one.
fn binding_state(k: &Kit, layout: &BoxLayout, id: &BoxId) -> Option<(u64, Option<PathBuf>)> {
    let p = k.strategy.binding_path(layout, id)?;
    let m = std::fs::symlink_metadata(&p).ok()?;
    Some((m.ino(), std::fs::read_link(&p).ok()))
}

/// The binding of box `id` resolves to its real sockets directory (device + inode), and
/// the binding directory holds nothing but bindings (no leaked temporary entries).
fn assert_binding_correct(k: &Kit, layout: &BoxLayout, id: &BoxId) {
    let Some(bp) = k.strategy.binding_path(layout, id) else { return };
    let want = dev_ino(&layout.sockets_dir(id)).expect("sockets dir exists");
    let got = dev_ino(&bp)
        .unwrap_or_else(|e| panic!("{}: binding {} does not resolve: {e}", sname(k), bp.display()));
    assert_eq!(
        got,
        want,
        "{}: binding {} does not resolve to {}",
        sname(k),
        bp.display(),
        layout.sockets_dir(id).display()
    );
}

fn binding_dir_entries(k: &Kit) -> Vec<PathBuf> {
    let Some(d) = k.strategy.binding_dir() else { return Vec::new() };
    let mut v: Vec<PathBuf> = std::fs::read_dir(&d)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn assert_no_leaked_entries(k: &Kit, expected: &[PathBuf]) {
    if k.strategy.binding_dir().is_none() {
        return;
    }
    let mut want = expected.to_vec();
    want.sort();
    let got = binding_dir_entries(k);
    assert_eq!(got, want, "{}: the binding directory holds leftovers", sname(k));
}

/// 64 threads ensure the same box at once (from nothing): all succeed, one correct
/// binding remains, no temporary entries leak.
pub fn concurrent_ensure_threads(k: &Kit) -> Outcome {
    let layout = k.harness.new_home();
    let id = k.harness.new_box(&layout);
    let barrier = Arc::new(Barrier::new(64));
    let errors: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..64)
            .map(|_| {
                let (b, s, l, i) = (barrier.clone(), k.strategy.clone(), &layout, &id);
                sc.spawn(move || {
                    b.wait();
                    (0..5)
                        .filter_map(|_| s.ensure(l, i).err().map(|e| format!("{e} ({e:?})")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().expect("thread")).collect()
    });
    assert!(
        errors.is_empty(),
        "{}: concurrent ensure failed {} times, first: {}",
        sname(k),
        errors.len(),
        errors[0]
    );
    assert_binding_correct(k, &layout, &id);
    let expected: Vec<PathBuf> = k.strategy.binding_path(&layout, &id).into_iter().collect();
    assert_no_leaked_entries(k, &expected);
    util::stream_round_trip(&k.strategy, &layout, &id, AGENT);
    Outcome::Passed
}

/// Six processes (the test binary re-executed) and four threads ensure the same box at
/// once, starting from a dangling binding where the strategy has one: all succeed, one
/// correct binding remains.
pub fn concurrent_ensure_processes(k: &Kit) -> Outcome {
    let Some(test) = child::current_test_name() else {
        return Outcome::Skipped(
            "cannot re-execute this test: not running under libtest (unnamed thread)".into(),
        );
    };
    let layout = k.harness.new_home();
    let id = k.harness.new_box(&layout);
    ok("ensure", k.strategy.ensure(&layout, &id));
    if let Some(bp) = k.strategy.binding_path(&layout, &id) {
        util::force_symlink(&k.harness.root().join("gone"), &bp);
    }
    let go = k.harness.root().join("go");
    let args = child::EnsureArgs {
        config: k.harness.config().clone(),
        home: layout.home().to_path_buf(),
        id: id.to_string(),
        go: go.clone(),
        iterations: 30,
    };
    let mut children: Vec<_> = (0..6)
        .map(|_| {
            child::spawn_self(
                &test,
                k.strategy.name(),
                "concurrent_ensure_processes",
                &args.encode(),
            )
            .unwrap_or_else(|e| panic!("spawn {}: {e}", test))
        })
        .collect();
    let errors: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let fresh = k.fresh();
                let a = args.clone();
                sc.spawn(move || child::run_ensure_role(&fresh, &a).err())
            })
            .collect();
        if let Err(e) = child::wait_ready(&go, 6 + 4, &mut children) {
            eprintln!("  {}: {e}; starting anyway", sname(k));
        }
        std::fs::write(&go, b"go").expect("write go file");
        hs.into_iter().filter_map(|h| h.join().expect("thread")).collect()
    });
    let mut failures = errors;
    for c in children {
        let (code, stderr) = child::wait_bounded(c, Duration::from_secs(60));
        if code != Some(child::CHILD_OK) {
            failures.push(format!(
                "child exited with {code:?} (42 = ok, 0 = role not found): {stderr}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}: cross-process ensure failed: {failures:#?}", sname(k));
    assert_binding_correct(k, &layout, &id);
    let expected: Vec<PathBuf> = k.strategy.binding_path(&layout, &id).into_iter().collect();
    assert_no_leaked_entries(k, &expected);
    util::stream_round_trip(&k.strategy, &layout, &id, AGENT);
    Outcome::Passed
}

fn bp(k: &Kit, layout: &BoxLayout, id: &BoxId) -> PathBuf {
    k.strategy.binding_path(layout, id).expect("checked by Need::BindingPath")
}

/// A binding that dangles (its target was removed) is replaced by `ensure`, by the same
/// instance (whatever it cached) and by a fresh one.
pub fn replaces_dangling_binding(k: &Kit) -> Outcome {
    let (layout, id) = setup(k);
    let p = bp(k, &layout, &id);
    for (who, s) in [("the same instance", k.strategy.clone()), ("a fresh instance", k.fresh())] {
        util::force_symlink(&k.harness.root().join("nowhere"), &p);
        ok(&format!("ensure over a dangling binding ({who})"), s.ensure(&layout, &id));
        assert_binding_correct(k, &layout, &id);
        util::stream_round_trip(&s, &layout, &id, AGENT);
    }
    Outcome::Passed
}

fn expect_occupied(k: &Kit, s: &Arc<dyn SocketBinding>, layout: &BoxLayout, id: &BoxId, who: &str) {
    let p = bp(k, layout, id);
    match s.ensure(layout, id) {
        Err(BindingError::Occupied { path, found }) => {
            assert_eq!(path, p, "Occupied must name the binding path");
            assert!(!found.is_empty(), "Occupied must say what was found");
        }
        other => panic!(
            "{}: ensure ({who}) with something foreign at {}: expected Occupied, got {other:?}",
            sname(k),
            p.display()
        ),
    }
}

/// A binding that names the box's own sockets directory by another spelling (through
/// `..`) is the same binding: `ensure` keeps it as it is (device + inode, never strings),
/// by the same instance and by a fresh one.
pub fn keeps_binding_spelled_differently(k: &Kit) -> Outcome {
    let (layout, id) = setup(k);
    let p = bp(k, &layout, &id);
    let alt = layout.box_dir(&id).join("..").join(id.as_str()).join("sockets");
    util::force_symlink(&alt, &p);
    let state = binding_state(k, &layout, &id);
    let w = util::Witness::of(&p).expect("just made");
    ok("ensure (same instance)", k.strategy.ensure(&layout, &id));
    ok("ensure (fresh instance)", k.fresh().ensure(&layout, &id));
    assert_eq!(
        binding_state(k, &layout, &id),
        state,
        "{}: a binding to {} (the sockets dir, spelled differently) was replaced",
        sname(k),
        alt.display()
    );
    assert!(
        w.unchanged(&p),
        "{}: the binding to {} was removed and re-created",
        sname(k),
        alt.display()
    );
    util::stream_round_trip(&k.strategy, &layout, &id, AGENT);
    Outcome::Passed
}

/// A binding that points to an existing directory which is not the box's own sockets
/// directory (it may be another home's live box) is refused with `Occupied`, and neither
/// it nor the directory is touched; `release` leaves it alone too.
pub fn refuses_link_to_foreign_directory(k: &Kit) -> Outcome {
    let (layout, id) = setup(k);
    let p = bp(k, &layout, &id);
    let decoy = k.harness.scratch_dir("decoy");
    std::fs::write(decoy.join("keep"), b"keep").expect("write");
    util::force_symlink(&decoy, &p);
    let before = (snapshot(&p), snapshot(&decoy));
    expect_occupied(k, &k.strategy, &layout, &id, "same instance");
    expect_occupied(k, &k.fresh(), &layout, &id, "fresh instance");
    let _ = k.strategy.release(&layout, &id);
    assert_eq!(
        (snapshot(&p), snapshot(&decoy)),
        before,
        "{}: the foreign link or its directory was touched",
        sname(k)
    );
    assert_eq!(std::fs::read_link(&p).expect("link still there"), decoy);
    Outcome::Passed
}

/// A regular file at the binding path is refused with `Occupied` and left untouched,
/// by `ensure` and by `release`.
pub fn refuses_regular_file_at_binding(k: &Kit) -> Outcome {
    let (layout, id) = setup(k);
    let p = bp(k, &layout, &id);
    std::fs::remove_file(&p).expect("remove binding");
    std::fs::write(&p, b"squatter").expect("write file");
    let before = snapshot(&p);
    expect_occupied(k, &k.strategy, &layout, &id, "same instance");
    expect_occupied(k, &k.fresh(), &layout, &id, "fresh instance");
    let _ = k.strategy.release(&layout, &id);
    assert_eq!(snapshot(&p), before, "{}: the regular file was touched", sname(k));
    assert_eq!(std::fs::read(&p).expect("read"), b"squatter");
    Outcome::Passed
}

/// A directory at the binding path is refused with `Occupied` and left untouched (with
/// its contents), by `ensure` and by `release`.
pub fn refuses_directory_at_binding(k: &Kit) -> Outcome {
    let (layout, id) = setup(k);
    let p = bp(k, &layout, &id);
    std::fs::remove_file(&p).expect("remove binding");
    std::fs::create_dir(&p).expect("mkdir");
    std::fs::write(p.join("inside"), b"inside").expect("write");
    let before = snapshot(&p);
    expect_occupied(k, &k.strategy, &layout, &id, "same instance");
    expect_occupied(k, &k.fresh(), &layout, &id, "fresh instance");
    let _ = k.strategy.release(&layout, &id);
    assert_eq!(snapshot(&p), before, "{}: the directory was touched", sname(k));
    Outcome::Passed
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

/// A binding directory opened to group and others (0777) is repaired to 0700 by the first
/// `ensure` of an instance, and by any `ensure` that has to (re)create the binding. (A
/// steady-state `ensure` may skip the parent check; see docs/strategies.md.)
pub fn repairs_binding_dir_mode(k: &Kit) -> Outcome {
    let (layout, id) = setup(k);
    let d = k.strategy.binding_dir().expect("checked by Need::BindingDir");
    assert_eq!(
        mode_of(&d) & 0o077,
        0,
        "{}: ensure created {} with group/other access",
        sname(k),
        d.display()
    );
    chmod(&d, 0o777);
    ok("ensure (fresh instance) on a 0777 binding dir", k.fresh().ensure(&layout, &id));
    assert_eq!(
        mode_of(&d) & 0o077,
        0,
        "{}: a fresh instance's ensure left {} at {:o}",
        sname(k),
        d.display(),
        mode_of(&d)
    );
    chmod(&d, 0o777);
    if let Some(p) = k.strategy.binding_path(&layout, &id) {
        std::fs::remove_file(&p).expect("reap binding");
    }
    ok(
        "ensure (same instance, binding reaped) on a 0777 binding dir",
        k.strategy.ensure(&layout, &id),
    );
    assert_eq!(
        mode_of(&d) & 0o077,
        0,
        "{}: re-creating the binding left {} at {:o}",
        sname(k),
        d.display(),
        mode_of(&d)
    );
    util::stream_round_trip(&k.strategy, &layout, &id, AGENT);
    Outcome::Passed
}

/// `ensure` by `s` with `dir` (a directory it must not use) in place: refused with
/// `Insecure` naming `dir` (and `mention`), or the box works through a binding that is
/// not in `dir`.
fn expect_not_used(
    k: &Kit,
    s: &Arc<dyn SocketBinding>,
    layout: &BoxLayout,
    id: &BoxId,
    dir: &Path,
    mention: Option<&str>,
    who: &str,
) {
    match s.ensure(layout, id) {
        Err(BindingError::Insecure { path, reason }) => {
            assert_eq!(path, dir, "Insecure must name the binding directory");
            if let Some(m) = mention {
                assert!(reason.contains(m), "Insecure's reason {reason:?} must mention {m}");
            }
        }
        Ok(()) => {
            if let Some(p) = s.binding_path(layout, id) {
                assert!(
                    !p.starts_with(dir),
                    "{}: ensure ({who}) put the binding {} in {}, a directory it must not use",
                    sname(k),
                    p.display(),
                    dir.display()
                );
            }
            util::stream_round_trip(s, layout, id, AGENT);
        }
        other => panic!(
            "{}: ensure ({who}): expected Insecure or a binding elsewhere than {}, got {other:?}",
            sname(k),
            dir.display()
        ),
    }
}

/// A binding directory owned by another user (chown to 65534) is never used: `ensure`
/// either refuses it with `Insecure` naming the owner or puts the binding elsewhere (a
/// fallback, see `squatted_shared_dir_never_stops_a_box`), and nothing in it is
/// touched. Root only.
pub fn refuses_foreign_owned_binding_dir(k: &Kit) -> Outcome {
    let (layout, id) = setup(k);
    let d = k.strategy.binding_dir().expect("checked by Need::BindingDir");
    std::os::unix::fs::chown(&d, Some(fork::NOBODY), Some(fork::NOBODY)).expect("chown to nobody");
    expect_not_used(k, &k.fresh(), &layout, &id, &d, Some("65534"), "fresh instance");
    if let Some(p) = k.strategy.binding_path(&layout, &id).filter(|p| p.starts_with(&d)) {
        let _ = std::fs::remove_file(&p);
    }
    let before_reaped = snapshot(&d);
    expect_not_used(
        k,
        &k.strategy,
        &layout,
        &id,
        &d,
        Some("65534"),
        "same instance, binding reaped",
    );
    assert_eq!(
        snapshot(&d),
        before_reaped,
        "{}: something was changed in a foreign-owned directory",
        sname(k)
    );
    let me = nix::unistd::geteuid().as_raw();
    std::os::unix::fs::chown(&d, Some(me), Some(nix::unistd::getegid().as_raw()))
        .expect("chown back");
    ok("ensure once the directory is ours again", k.strategy.ensure(&layout, &id));
    Outcome::Passed
}

/// A binding directory that is a symlink (even to a directory of ours) is never used:
/// `ensure` refuses it with `Insecure` or puts the binding elsewhere; neither the link
/// nor its target is touched.
pub fn refuses_symlinked_binding_dir(k: &Kit) -> Outcome {
    let d = k.strategy.binding_dir().expect("checked by Need::BindingDir");
    let layout = k.harness.new_home();
    let id = k.harness.new_box(&layout);
    if let Some(parent) = d.parent() {
        std::fs::create_dir_all(parent).expect("create parent of binding dir");
    }
    let _ = std::fs::remove_dir_all(&d);
    let target = k.harness.scratch_dir("elsewhere");
    chmod(&target, 0o700);
    std::os::unix::fs::symlink(&target, &d).expect("symlink binding dir");
    let before = (snapshot(&d), snapshot(&target));
    expect_not_used(k, &k.strategy, &layout, &id, &d, None, "same instance");
    expect_not_used(k, &k.fresh(), &layout, &id, &d, None, "fresh instance");
    assert_eq!(
        (snapshot(&d), snapshot(&target)),
        before,
        "{}: the symlinked binding dir or its target was touched",
        sname(k)
    );
    Outcome::Passed
}

/// Make `dir` as uid 65534 (mode 0777), in a forked child that really drops to it.
fn mkdir_as_nobody(dir: &Path) {
    let p = dir.to_owned();
    fork::in_child(move || {
        // SAFETY: plain system calls in the forked child, which only makes one directory
        // and exits; dropping supplementary groups, then gid, then uid.
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(fork::NOBODY) != 0
                || libc::setuid(fork::NOBODY) != 0
            {
                return Err(format!("drop to nobody: {}", std::io::Error::last_os_error()));
            }
        }
        std::fs::create_dir(&p).map_err(|e| format!("mkdir {} as nobody: {e}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("chmod: {e}"))
    })
    .unwrap_or_else(|e| panic!("the squatter (uid 65534) could not make {}: {e}", dir.display()));
    let m = std::fs::symlink_metadata(dir).expect("the squatter's directory");
    assert_eq!(m.uid(), fork::NOBODY, "the squatter's directory is not uid 65534's");
}

/// Directories of ours directly in `base`, other than `except`.
fn own_dirs(base: &Path, except: &Path) -> Vec<PathBuf> {
    let me = nix::unistd::geteuid().as_raw();
    let mut v: Vec<PathBuf> = std::fs::read_dir(base)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| {
        p != except && std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir() && m.uid() == me)
    });
    v.sort();
    v
}

/// A box works (`ensure`, bind, connect) through `s` although `squatted` is another
/// user's, and nothing of theirs is used.
fn works_beside(
    k: &Kit,
    s: &Arc<dyn SocketBinding>,
    layout: &BoxLayout,
    id: &BoxId,
    squatted: &Path,
    who: &str,
) {
    if let Err(e) = s.ensure(layout, id) {
        panic!(
            "{}: a squatted shared directory stopped the box ({who}): ensure failed with {e:?} while uid 65534 holds {}",
            sname(k),
            squatted.display()
        );
    }
    if let Some(p) = s.binding_path(layout, id) {
        assert!(
            !p.starts_with(squatted),
            "{}: ({who}) the binding {} is in the squatter's {}",
            sname(k),
            p.display(),
            squatted.display()
        );
    }
    util::stream_round_trip(s, layout, id, AGENT);
}

/// A shared directory another user takes first never stops a box. Uid 65534 (a forked
/// child that really drops to it) makes the strategy's predictable directory
/// (`shared_dir()`, in a sticky base others can write, like `/tmp`) before first use:
/// a box still works, through the same and a fresh instance. Then the directory the
/// strategy moved to is removed (a cleaner) and uid 65534 makes one of that very name
/// (it is visible in the base): a box works again. Nothing of the squatter's is used or
/// touched. Root only.
pub fn squatted_shared_dir_never_stops_a_box(k: &Kit) -> Outcome {
    let d = k.strategy.shared_dir().expect("checked by Need::SharedDir");
    let base = d.parent().expect("a shared directory has a base").to_owned();
    std::fs::create_dir_all(&base).expect("create the base");
    chmod(&base, 0o1777);
    mkdir_as_nobody(&d);
    let squat = snapshot(&d);
    let layout = k.harness.new_home();
    let id = k.harness.new_box(&layout);
    works_beside(k, &k.strategy, &layout, &id, &d, "first use");
    works_beside(k, &k.fresh(), &layout, &id, &d, "fresh instance");
    assert_eq!(snapshot(&d), squat, "{}: the squatter's {} was touched", sname(k), d.display());
    // Where the strategy went instead, if in the base: its name is public there.
    let moved = own_dirs(&base, &d);
    if let [fallback] = moved.as_slice() {
        std::fs::remove_dir_all(fallback).expect("the cleaner removes the fallback");
        mkdir_as_nobody(fallback);
        let squat2 = snapshot(fallback);
        let second = k.harness.new_box(&layout);
        works_beside(
            k,
            &k.strategy,
            &layout,
            &id,
            fallback,
            "the same instance, its fallback re-squatted",
        );
        works_beside(
            k,
            &k.fresh(),
            &layout,
            &second,
            fallback,
            "a fresh instance, the fallback re-squatted",
        );
        assert_eq!(
            snapshot(fallback),
            squat2,
            "{}: the squatter's {} was touched",
            sname(k),
            fallback.display()
        );
        assert_eq!(snapshot(&d), squat, "{}: the squatter's {} was touched", sname(k), d.display());
    }
    Outcome::Passed
}

/// `release` removes the binding (and nothing of the box's real directory, nothing of
/// another box), and is idempotent.
pub fn release_is_idempotent_and_removes_binding(k: &Kit) -> Outcome {
    let (layout, id) = setup(k);
    let _l = util::stream_round_trip(&k.strategy, &layout, &id, AGENT);
    let neighbour = k.harness.new_box(&layout);
    ok("ensure neighbour", k.strategy.ensure(&layout, &neighbour));
    let l_neighbour = util::stream_round_trip(&k.strategy, &layout, &neighbour, AGENT);
    let real = snapshot(&layout.box_dir(&id));
    ok("release", k.strategy.release(&layout, &id));
    if let Some(p) = k.strategy.binding_path(&layout, &id) {
        assert!(!exists_nofollow(&p), "{}: release left {}", sname(k), p.display());
    }
    ok("second release", k.strategy.release(&layout, &id));
    ok("release by a fresh instance", k.fresh().release(&layout, &id));
    assert_eq!(
        snapshot(&layout.box_dir(&id)),
        real,
        "{}: release touched the box's own directory",
        sname(k)
    );
    assert_binding_correct(k, &layout, &neighbour);
    util::exchange(&k.strategy, &layout, &neighbour, AGENT, &l_neighbour, b"neighbour untouched");
    Outcome::Passed
}

/// `release` of a box of home B never removes a binding that serves home A's live box
/// with the same id; A's sockets keep working.
pub fn release_leaves_other_home_alone(k: &Kit) -> Outcome {
    let (a, id) = setup(k);
    let la = util::stream_round_trip(&k.strategy, &a, &id, AGENT);
    let b = k.harness.new_home();
    k.harness.create_box(&b, &id);
    let _ = k.strategy.release(&b, &id); // Ok or an error: either way A must survive
    let _ = k.fresh().release(&b, &id);
    assert_binding_correct(k, &a, &id);
    util::exchange(&k.strategy, &a, &id, AGENT, &la, b"still A");
    Outcome::Passed
}

/// `sweep` removes a dead box's leftovers and keeps live boxes' bindings, another home's
/// bindings, and foreign files in the binding directory.
pub fn sweep_removes_only_dead_leftovers(k: &Kit) -> Outcome {
    let s = &k.strategy;
    let (a, live) = setup(k);
    let l_live = util::stream_round_trip(s, &a, &live, AGENT);
    let dead = k.harness.new_box(&a);
    ok("ensure dead box", s.ensure(&a, &dead));
    boxdir::remove_box_dir(&a, &dead).expect("remove dead box");
    let b = k.harness.new_home();
    let other = k.harness.new_box(&b);
    ok("ensure other home's box", s.ensure(&b, &other));
    let l_other = util::stream_round_trip(s, &b, &other, AGENT);
    let junk = s.binding_dir().map(|d| {
        let j = d.join("not-a-binding");
        std::fs::write(&j, b"junk").expect("write junk");
        j
    });
    let report = ok("sweep", s.sweep(&a));
    if let Some(p) = s.binding_path(&a, &dead) {
        assert!(!exists_nofollow(&p), "{}: sweep left the dead box's {}", sname(k), p.display());
        assert!(
            report.removed.contains(&p),
            "{}: sweep report {report:?} does not list {}",
            sname(k),
            p.display()
        );
    }
    for (l, id) in [(&a, &live), (&b, &other)] {
        if let Some(p) = s.binding_path(l, id) {
            assert!(
                !report.removed.contains(&p),
                "{}: sweep removed a live binding {}",
                sname(k),
                p.display()
            );
        }
        assert_binding_correct(k, l, id);
    }
    if let Some(j) = junk {
        assert_eq!(std::fs::read(&j).expect("junk kept"), b"junk");
    }
    util::exchange(s, &a, &live, AGENT, &l_live, b"live");
    util::exchange(s, &b, &other, AGENT, &l_other, b"other home");
    let empty = k.harness.new_home();
    ok("sweep of a home without boxes", s.sweep(&empty));
    Outcome::Passed
}

/// After its listener is gone and the box is released (or removed and re-created with
/// the same id), the address can be bound again.
pub fn released_address_is_bindable_again(k: &Kit) -> Outcome {
    let s = &k.strategy;
    let (layout, id) = setup(k);
    util::close_listener(util::stream_round_trip(s, &layout, &id, AGENT));
    ok("release", s.release(&layout, &id));
    ok("ensure again", s.ensure(&layout, &id));
    util::close_listener(util::stream_round_trip(s, &layout, &id, AGENT));
    ok("release", s.release(&layout, &id));
    boxdir::remove_box_dir(&layout, &id).expect("remove box");
    k.harness.create_box(&layout, &id);
    ok("ensure of the re-created box", s.ensure(&layout, &id));
    util::stream_round_trip(s, &layout, &id, AGENT);
    Outcome::Passed
}

fn assert_distinct(k: &Kit, what: &str, x: (&BoxLayout, &BoxId), y: (&BoxLayout, &BoxId)) {
    for (_, name) in budget_names() {
        let ax = ok("address", k.strategy.address(x.0, x.1, &name));
        let ay = ok("address", k.strategy.address(y.0, y.1, &name));
        assert_ne!(ax, ay, "{}: {what} share the address of {name}", sname(k));
    }
}

/// Two live boxes: each connects to its own listener. Checked *while* both are bound.
fn both_live(k: &Kit, x: (&BoxLayout, &BoxId), y: (&BoxLayout, &BoxId)) {
    let s = &k.strategy;
    let lx = ok("bind x", s.bind_stream(x.0, x.1, AGENT));
    let ly = ok("bind y", s.bind_stream(y.0, y.1, AGENT));
    util::exchange(s, x.0, x.1, AGENT, &lx, b"x");
    util::exchange(s, y.0, y.1, AGENT, &ly, b"y");
}

/// Two boxes of one home never share an address, and each reaches its own listener.
pub fn boxes_never_share_an_address(k: &Kit) -> Outcome {
    let (layout, a) = setup(k);
    let b = k.harness.new_box(&layout);
    ok("ensure b", k.strategy.ensure(&layout, &b));
    assert_distinct(k, "two boxes", (&layout, &a), (&layout, &b));
    both_live(k, (&layout, &a), (&layout, &b));
    Outcome::Passed
}

/// Boxes of two homes (different ids) never share an address.
pub fn homes_with_different_ids_never_collide(k: &Kit) -> Outcome {
    let (h1, a) = setup(k);
    let (h2, b) = setup(k);
    assert_distinct(k, "two homes", (&h1, &a), (&h2, &b));
    both_live(k, (&h1, &a), (&h2, &b));
    Outcome::Passed
}

/// Two homes with the SAME box id. The first home's live box keeps working whatever
/// happens. The second home's `ensure` either fails with `Occupied` (strategies keyed by
/// id only, like short-symlink) or succeeds with addresses different from the first's
/// (strategies whose addresses depend on the home). Once the first box is dead, the
/// second home's `ensure` succeeds and its sockets work.
pub fn homes_with_same_id_never_collide(k: &Kit) -> Outcome {
    let s = &k.strategy;
    let (h1, id) = setup(k);
    let l1 = util::stream_round_trip(s, &h1, &id, AGENT);
    let h2 = k.harness.new_home();
    k.harness.create_box(&h2, &id);
    match s.ensure(&h2, &id) {
        Ok(()) => {
            assert_distinct(k, "two homes with the same id", (&h1, &id), (&h2, &id));
            let l2 = util::stream_round_trip(s, &h2, &id, AGENT);
            util::exchange(s, &h2, &id, AGENT, &l2, b"second");
        }
        Err(BindingError::Occupied { .. }) => {}
        Err(e) => {
            panic!("{}: second home, same id: expected Ok or Occupied, got {e} ({e:?})", sname(k))
        }
    }
    let _ = k.fresh().ensure(&h2, &id);
    assert_binding_correct(k, &h1, &id);
    util::exchange(s, &h1, &id, AGENT, &l1, b"first home still served");
    util::close_listener(l1);
    boxdir::remove_box_dir(&h1, &id).expect("remove first box");
    ok("ensure of the second home once the first box is dead", s.ensure(&h2, &id));
    assert_binding_correct(k, &h2, &id);
    util::stream_round_trip(s, &h2, &id, AGENT);
    Outcome::Passed
}

/// A fresh instance (a restarted runtime) computes the same addresses, needs to write
/// nothing, and connects to a listener bound by the old one.
pub fn restart_needs_nothing_persisted(k: &Kit) -> Outcome {
    let (layout, id) = setup(k);
    let l = util::stream_round_trip(&k.strategy, &layout, &id, AGENT);
    let names = budget_names();
    let old: Vec<SocketAddress> =
        names.iter().map(|(_, n)| ok("address", k.strategy.address(&layout, &id, n))).collect();
    let before = (snapshot(layout.home()), snapshot(k.harness.base_dir()));
    drop(k.strategy.clone());
    let s2 = k.fresh();
    let new: Vec<SocketAddress> =
        names.iter().map(|(_, n)| ok("address", s2.address(&layout, &id, n))).collect();
    assert_eq!(old, new, "{}: a fresh instance computes other addresses", sname(k));
    ok("ensure by a fresh instance", s2.ensure(&layout, &id));
    let after = (snapshot(layout.home()), snapshot(k.harness.base_dir()));
    assert!(
        before == after,
        "{}: a restart had to write:\n{}{}",
        sname(k),
        util::diff(&before.0, &after.0),
        util::diff(&before.1, &after.1)
    );
    util::exchange(&s2, &layout, &id, AGENT, &l, b"after restart");
    Outcome::Passed
}

/// A binding removed behind the strategy's back (the macOS /tmp cleaner) is healed by the
/// next `ensure`, by the same instance (whatever it cached) and by a fresh one; the
/// listener bound before is reachable again. A box's binding opened before the reap
/// refuses the dial (its link no longer names its directory) instead of dialling
/// through a directory nobody names; a binding opened after the heal dials.
pub fn ensure_heals_reaped_binding(k: &Kit) -> Outcome {
    let (layout, id) = setup(k);
    let l = util::stream_round_trip(&k.strategy, &layout, &id, AGENT);
    let p = bp(k, &layout, &id);
    for (who, s) in [("same instance", k.strategy.clone()), ("fresh instance", k.fresh())] {
        let held = ok(&format!("open_box ({who})"), s.open(&layout, &id));
        std::fs::remove_file(&p).expect("reap binding");
        assert!(
            held.connect(&util::socket(AGENT), None).is_err(),
            "{}: a binding held across the reap of its link still dials ({who})",
            sname(k)
        );
        ok(&format!("ensure after reaping ({who})"), s.ensure(&layout, &id));
        util::exchange(&s, &layout, &id, AGENT, &l, b"healed");
    }
    Outcome::Passed
}

/// Every path address is under a policy path with `Sockets` access and directory intent
/// (or equals it); a `SymlinkToDirectory` names the real sockets directory; the policy is
/// the same before `ensure`, after it, and after the binding was reaped (it is stated,
/// never read back from disk).
pub fn policy_paths_cover_every_address(k: &Kit) -> Outcome {
    let s = &k.strategy;
    let layout = k.harness.new_home();
    let id = k.harness.new_box(&layout);
    let before = ok("policy_paths before ensure", s.policy_paths(&layout, &id));
    ok("ensure", s.ensure(&layout, &id));
    let pp = ok("policy_paths", s.policy_paths(&layout, &id));
    assert_eq!(pp, before, "{}: policy paths differ before and after ensure", sname(k));
    let real = dev_ino(&layout.sockets_dir(&id)).expect("sockets dir");
    for p in &pp {
        if let PolicyIntent::SymlinkToDirectory { target } = &p.intent {
            assert_eq!(
                dev_ino(target).ok(),
                Some(real),
                "{}: {} targets {}, not the sockets dir",
                sname(k),
                p.path.display(),
                target.display()
            );
        }
    }
    for (label, name) in budget_names() {
        let addr = ok("address", s.address(&layout, &id, &name));
        let Some(path) = addr.as_path() else { continue };
        let cover = pp.iter().find(|p| {
            p.access == PolicyAccess::Sockets
                && !matches!(p.intent, PolicyIntent::File)
                && (path.parent() == Some(p.path.as_path()) || path.starts_with(&p.path))
        });
        assert!(
            cover.is_some(),
            "{}: {label} at {} is not covered by a Sockets policy path with directory intent: {pp:#?}",
            sname(k),
            path.display()
        );
    }
    if let Some(p) = s.binding_path(&layout, &id) {
        std::fs::remove_file(&p).expect("reap binding");
        let reaped = ok("policy_paths with the binding reaped", s.policy_paths(&layout, &id));
        assert_eq!(
            reaped,
            pp,
            "{}: policy paths changed when the binding was reaped (read back from disk?)",
            sname(k)
        );
    }
    Outcome::Passed
}

/// A home named through a symlink is the same home as its real path: ensure is idempotent
/// across the two spellings (the binding entry is not replaced), and sockets bound
/// through one spelling are reached through the other.
pub fn home_through_symlink(k: &Kit) -> Outcome {
    let s = &k.strategy;
    let real = k.harness.new_home();
    let link_path = k.harness.root().join("home-link");
    std::os::unix::fs::symlink(real.home(), &link_path).expect("symlink home");
    let via = BoxLayout::new(&link_path);
    for (first, second) in [(&real, &via), (&via, &real)] {
        let id = k.harness.new_box(&real);
        ok("ensure (first spelling)", s.ensure(first, &id));
        let state = binding_state(k, first, &id);
        let w = s.binding_path(first, &id).and_then(|p| Some((util::Witness::of(&p)?, p)));
        ok("ensure (second spelling)", s.ensure(second, &id));
        ok("ensure (first spelling again)", s.ensure(first, &id));
        assert_eq!(
            binding_state(k, first, &id),
            state,
            "{}: ensure through the other spelling of the home replaced the binding",
            sname(k)
        );
        if let Some((w, p)) = w {
            assert!(
                w.unchanged(&p),
                "{}: ensure through the other spelling re-created {}",
                sname(k),
                p.display()
            );
        }
        assert_binding_correct(k, second, &id);
        let l = ok("bind", s.bind_stream(first, &id, AGENT));
        util::exchange(s, second, &id, AGENT, &l, b"via other spelling");
        let l2 = ok("bind", s.bind_stream(second, &id, "ready.sock"));
        util::exchange(s, first, &id, "ready.sock", &l2, b"and back");
    }
    Outcome::Passed
}

/// `ensure` of a box whose sockets directory is missing fails with `MissingSocketDir`
/// naming the id and the directory — also after a successful ensure, once the box was
/// removed — and creates no binding.
pub fn missing_socket_dir(k: &Kit) -> Outcome {
    let s = &k.strategy;
    let layout = k.harness.new_home();
    let never = BoxId::generate();
    let done = k.harness.new_box(&layout);
    ok("ensure", s.ensure(&layout, &done));
    boxdir::remove_box_dir(&layout, &done).expect("remove box");
    let half = k.harness.new_box(&layout);
    std::fs::remove_dir(layout.sockets_dir(&half)).expect("remove sockets dir");
    let home_before = snapshot(layout.home());
    for id in [&never, &done, &half] {
        match s.ensure(&layout, id) {
            Err(BindingError::MissingSocketDir { id: got, path }) => {
                assert_eq!(got, id.to_string());
                assert_eq!(path, layout.sockets_dir(id));
            }
            other => panic!(
                "{}: ensure of box {id} without a sockets dir: expected MissingSocketDir, got {other:?}",
                sname(k)
            ),
        }
        if id != &done {
            if let Some(p) = s.binding_path(&layout, id) {
                assert!(
                    !exists_nofollow(&p),
                    "{}: a binding {} was created for a box without sockets dir",
                    sname(k),
                    p.display()
                );
            }
        }
    }
    assert_eq!(snapshot(layout.home()), home_before, "{}: ensure wrote into the home", sname(k));
    Outcome::Passed
}

/// Socket file names that are not one safe path component (`../x`, `a/b`, empty, `.`,
/// `..`, absolute, with NUL) are refused with `Invalid` by `address`, `bind_stream`,
/// `bind_datagram` and `connect_stream`, and nothing is created.
pub fn invalid_file_names(k: &Kit) -> Outcome {
    let s = &k.strategy;
    let (layout, id) = setup(k);
    let before = snapshot(k.harness.root());
    for bad in ["../x", "a/b", "", ".", "..", "/abs", "a\0b", "../../../../../../tmp/x"] {
        let results: [(&str, Option<BindingError>); 4] = [
            ("address", s.address(&layout, &id, bad).err()),
            ("bind_stream", s.bind_stream(&layout, &id, bad).err()),
            ("bind_datagram", s.bind_datagram(&layout, &id, bad).err()),
            ("connect_stream", s.connect_stream(&layout, &id, bad).err()),
        ];
        for (op, r) in results {
            assert!(
                matches!(r, Some(BindingError::Invalid { .. })),
                "{}: {op}({bad:?}): expected Invalid, got {r:?}",
                sname(k)
            );
        }
    }
    let after = snapshot(k.harness.root());
    assert!(
        before == after,
        "{}: invalid names created files:\n{}",
        sname(k),
        util::diff(&before, &after)
    );
    Outcome::Passed
}

/// Binding an address that a live listener holds fails with an `Io` error (address in
/// use), and the live listener keeps serving.
pub fn live_address_is_not_rebound(k: &Kit) -> Outcome {
    let s = &k.strategy;
    let (layout, id) = setup(k);
    let l = ok("bind", s.bind_stream(&layout, &id, AGENT));
    match s.bind_stream(&layout, &id, AGENT) {
        Err(BindingError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AddrInUse => {}
        other => panic!(
            "{}: binding a live address again: expected Io(AddrInUse), got {other:?}",
            sname(k)
        ),
    }
    // core's stale-socket probe connects to the live listener to tell live from stale;
    // that probe arrives as an empty, closed connection. Drain it before the exchange.
    util::set_nonblocking(&l);
    let mut phantoms = 0;
    while let Ok((st, _)) = l.accept_once() {
        drop(st);
        phantoms += 1;
    }
    if phantoms > 0 {
        eprintln!(
            "  {}: note: the failed re-bind left {phantoms} empty connection(s) on the live listener",
            sname(k)
        );
    }
    util::exchange(s, &layout, &id, AGENT, &l, b"still the first");
    Outcome::Passed
}

/// Connecting where nothing listens fails at once with an `Io` error naming the
/// address — both before anything was bound and after the listener is gone.
pub fn connect_without_listener_fails(k: &Kit) -> Outcome {
    let s = &k.strategy;
    let (layout, id) = setup(k);
    let addr = ok("address", s.address(&layout, &id, AGENT));
    let check = |when: &str| match s.connect_stream(&layout, &id, AGENT) {
        Err(e @ BindingError::Io { .. }) => {
            assert!(
                e.to_string().contains(&addr.to_string()),
                "{}: {e} does not name {addr}",
                sname(k)
            );
        }
        other => panic!("{}: connect {when}: expected Io, got {other:?}", sname(k)),
    };
    check("before any bind");
    util::close_listener(ok("bind", s.bind_stream(&layout, &id, AGENT)));
    check("after the listener is gone");
    Outcome::Passed
}

/// Accept everything pending on a non-blocking listener; a connection that passes the
/// listener's policy is *served* (sent data) so the peer can tell.
fn serve_pending(
    l: &Listener,
    served: &mut Vec<std::os::unix::net::UnixStream>,
    rejected: &mut u32,
) {
    loop {
        match l.accept_once() {
            Ok((mut st, _)) => {
                let _ = st.write_all(b"served");
                served.push(st);
            }
            Err(BindingError::PeerRejected { .. }) => *rejected += 1,
            Err(_) => return,
        }
    }
}

/// Another local user (a child dropped to `nobody`) cannot talk to a box socket: for
/// directory-protected strategies `connect` fails with EACCES; for peer-credential
/// strategies the listener drops the connection unserved and counts the rejection.
/// Root only (root bypasses file permissions, so the peer must really be another user).
pub fn other_user_cannot_connect(k: &Kit) -> Outcome {
    let s = &k.strategy;
    let (layout, id) = setup(k);
    let l = ok("bind", s.bind_stream(&layout, &id, AGENT));
    let addr = l.address().clone();
    if let Some(p) = addr.as_path() {
        // The socket file's own mode comes from the umask; open it up so that only the
        // strategy's protection is tested (a runtime started with umask 0 must be safe).
        chmod(p, 0o777);
    }
    util::set_nonblocking(&l);
    let (mut served, mut rejected) = (Vec::new(), 0u32);
    let report = fork::connect_from_child(&addr, PeerKind::OtherUser, || {
        serve_pending(&l, &mut served, &mut rejected)
    });
    serve_pending(&l, &mut served, &mut rejected);
    let caps = k.caps();
    match report {
        PeerReport::ConnectRefused(e) if e == libc::EACCES || e == libc::EPERM => {}
        PeerReport::ClosedWithoutService if caps.peer_credentials => {
            assert!(
                rejected >= 1 && l.policy().rejected() >= 1,
                "{}: the peer was dropped but no rejection was counted",
                sname(k)
            );
        }
        PeerReport::DropFailed(e) => panic!("could not drop to nobody in the child: errno {e}"),
        other => panic!(
            "{}: uid 65534 reached box socket {addr} (cross_user {:?}): child reported {other:?}, {} connection(s) served",
            sname(k),
            caps.cross_user,
            served.len()
        ),
    }
    assert!(served.is_empty(), "{}: a connection from uid 65534 was served", sname(k));
    if matches!(caps.cross_user, CrossUserProtection::PeerCredentials) {
        assert!(
            caps.peer_credentials,
            "{}: cross_user PeerCredentials without peer_credentials",
            sname(k)
        );
    }
    // Control: the owner still gets through.
    util::exchange(s, &layout, &id, AGENT, &l, b"owner");
    Outcome::Passed
}

/// Another local user (a child dropped to `nobody`) cannot get a datagram accepted by a
/// box's datagram socket (`net.sock`, as gvproxy/vfkit use it): for directory-protected
/// strategies `sendto` fails with EACCES; for peer-credential strategies the datagram is
/// refused by `peer::recv_checked` with `PeerRejected` naming uid 65534, while the owner's
/// datagram is accepted. Root only; Linux only (`SCM_CREDENTIALS`).
pub fn other_user_datagrams_are_refused(k: &Kit) -> Outcome {
    sys::other_user_datagrams_are_refused(k)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod sys {
    use super::*;
    use boxsock_core::peer;
    use std::os::fd::AsFd;

    pub(super) fn other_user_datagrams_are_refused(k: &Kit) -> Outcome {
        let s = &k.strategy;
        let (layout, id) = setup(k);
        let name = "net.sock";
        let d = ok("bind_datagram", s.bind_datagram(&layout, &id, name));
        d.set_read_timeout(Some(util::IO_TIMEOUT)).expect("timeout");
        let addr = ok("address", s.address(&layout, &id, name));
        if let Some(p) = addr.as_path() {
            chmod(p, 0o777); // only the strategy's protection is tested, not the umask
        }
        let policy = ok("peer_policy", s.peer_policy(&layout, &id));
        peer::set_pass_cred(d.as_fd()).expect("SO_PASSCRED");
        let report = fork::send_from_child(&addr, b"intruder");
        let caps = k.caps();
        match report {
            PeerReport::ConnectRefused(e) if e == libc::EACCES || e == libc::EPERM => {}
            PeerReport::Sent => {
                assert!(
                    policy.is_checked(),
                    "{}: uid 65534 sent a datagram to {addr} and nothing checks senders (cross_user {:?})",
                    sname(k),
                    caps.cross_user
                );
                let mut buf = [0u8; 64];
                match peer::recv_checked(&d, &mut buf, &policy, name, &addr) {
                    Err(BindingError::PeerRejected { uid, .. }) => assert_eq!(uid, fork::NOBODY),
                    other => panic!(
                        "{}: a datagram from uid 65534 at {addr}: expected PeerRejected, got {other:?}",
                        sname(k)
                    ),
                }
            }
            PeerReport::DropFailed(e) => panic!("could not drop to nobody in the child: errno {e}"),
            other => panic!("{}: sending as uid 65534 to {addr}: unexpected {other:?}", sname(k)),
        }
        // Control: the owner's datagram is accepted.
        let me = std::os::unix::net::UnixDatagram::unbound().expect("socket");
        me.send_to_addr(b"owner", &addr.to_std().expect("address")).expect("owner sends");
        let mut buf = [0u8; 64];
        let (n, _) = ok(
            "recv_checked of the owner's datagram",
            peer::recv_checked(&d, &mut buf, &policy, name, &addr),
        );
        assert_eq!(&buf[..n], b"owner");
        Outcome::Passed
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod sys {
    use super::*;

    pub(super) fn other_user_datagrams_are_refused(_k: &Kit) -> Outcome {
        Outcome::Skipped(
            "sender credentials of datagrams (SCM_CREDENTIALS) are checked on Linux only".into(),
        )
    }
}

/// A listener run by another user (a child dropped to `nobody`) at a box address is not
/// trusted: `connect_stream` fails with `PeerRejected` naming uid 65534. Root only; for
/// peer-credential strategies (path strategies' 0700 directory keeps the impostor from
/// binding at all).
pub fn impostor_listener_is_rejected(k: &Kit) -> Outcome {
    let s = &k.strategy;
    let (layout, id) = setup(k);
    let addr = ok("address", s.address(&layout, &id, AGENT));
    let child = match fork::listen_in_child(&addr) {
        Ok(c) => c,
        Err(PeerReport::SocketFailed(e)) if e == libc::EACCES => {
            return Outcome::Skipped(format!(
                "uid 65534 cannot bind at {addr} (EACCES): the filesystem already protects it"
            ));
        }
        Err(r) => panic!("{}: the impostor child could not listen at {addr}: {r:?}", sname(k)),
    };
    match s.connect_stream(&layout, &id, AGENT) {
        Err(BindingError::PeerRejected { uid, .. }) => assert_eq!(uid, fork::NOBODY),
        other => panic!(
            "{}: connecting to an impostor at {addr}: expected PeerRejected, got {other:?}",
            sname(k)
        ),
    }
    drop(child);
    Outcome::Passed
}

/// A peer in another network namespace (a child after `unshare(CLONE_NEWNET)`) cannot
/// reach an abstract address. Root only; skipped when namespaces are not permitted.
pub fn other_netns_cannot_connect(k: &Kit) -> Outcome {
    let s = &k.strategy;
    let (layout, id) = setup(k);
    let l = util::stream_round_trip(s, &layout, &id, AGENT); // control: reachable here
    let addr = l.address().clone();
    util::set_nonblocking(&l);
    let (mut served, mut rejected) = (Vec::new(), 0u32);
    let report = fork::connect_from_child(&addr, PeerKind::OtherNetns, || {
        serve_pending(&l, &mut served, &mut rejected)
    });
    match report {
        PeerReport::UnshareFailed(e) => {
            return Outcome::Skipped(format!(
                "unshare(CLONE_NEWNET) is not permitted here (errno {e})"
            ));
        }
        PeerReport::ConnectRefused(_) => {}
        other => {
            panic!("{}: a peer in another network namespace reached {addr}: {other:?}", sname(k))
        }
    }
    assert!(
        served.is_empty() && rejected == 0,
        "{}: a connection arrived from another network namespace",
        sname(k)
    );
    Outcome::Passed
}

/// Strategies that are not `filesystem_visible` create no file for their sockets: the
/// addresses are not paths, and binding and connecting every socket changes nothing under
/// the home or the base directory.
pub fn no_filesystem_entries(k: &Kit) -> Outcome {
    let s = &k.strategy;
    let (layout, id) = setup(k);
    let before = snapshot(k.harness.root());
    let mut keep = Vec::new();
    for (label, name) in budget_names() {
        let addr = ok("address", s.address(&layout, &id, &name));
        assert!(
            addr.as_path().is_none(),
            "{}: not filesystem_visible, but {label} has the path address {addr}",
            sname(k)
        );
        keep.push(util::stream_round_trip(s, &layout, &id, &name));
    }
    let d = ok("bind_datagram", s.bind_datagram(&layout, &id, "net.sock-krun.sock"));
    let after = snapshot(k.harness.root());
    assert!(
        before == after,
        "{}: binding sockets changed the filesystem:\n{}",
        sname(k),
        util::diff(&before, &after)
    );
    drop((keep, d));
    Outcome::Passed
}

/// A path strategy hands out a verified socket directory ([`BoxBinding::dir`](boxsock_core::BoxBinding::dir)):
/// the box's real `sockets` directory (same device and inode), owned by the owner; binds
/// and connects through it keep reaching that directory even after the names on the way
/// are changed (the directory is renamed away and another put in its place).
pub fn socket_dir_is_verified_and_held(k: &Kit) -> Outcome {
    let s = &k.strategy;
    let (layout, id) = setup(k);
    let real = layout.sockets_dir(&id);
    let dir = match s.socket_dir(&layout, &id) {
        Ok(Some(d)) => d,
        Ok(None) => panic!(
            "{}: a path strategy returned no socket_dir(): its binds and connects would re-resolve {} through directories others may change",
            sname(k),
            real.display()
        ),
        Err(e) => panic!("{}: socket_dir after ensure failed: {e} ({e:?})", sname(k)),
    };
    let (dev, ino) = dev_ino(&real).expect("stat the real sockets dir");
    assert_eq!(
        (dir.identity().dev, dir.identity().ino),
        (dev, ino),
        "{}: socket_dir() is not {} (dev+ino)",
        sname(k),
        real.display()
    );
    assert_eq!(
        dir.owner(),
        k.harness.config().uid,
        "{}: socket_dir verified for the wrong owner",
        sname(k)
    );
    // Change the names: the real directory moves away, an impostor takes its name.
    let moved = real.with_file_name("sockets.moved");
    std::fs::rename(&real, &moved).expect("rename the sockets dir away");
    std::fs::create_dir(&real).expect("create the impostor directory");
    chmod(&real, 0o700);
    let policy = ok("peer_policy", s.peer_policy(&layout, &id));
    let l = ok("bind through the held socket_dir", dir.bind_stream(AGENT, policy.clone()));
    assert!(
        moved.join(AGENT).exists(),
        "{}: the held socket_dir did not bind in the directory it verified",
        sname(k)
    );
    assert!(
        !real.join(AGENT).exists(),
        "{}: the held socket_dir bound at the re-resolved name",
        sname(k)
    );
    let _c = ok("connect through the held socket_dir", dir.connect_stream(AGENT, &policy));
    drop(l);
    std::fs::remove_dir(&real).expect("remove the impostor");
    std::fs::rename(&moved, &real).expect("put the real directory back");
    Outcome::Passed
}

/// A box's link replaced behind the strategy's back by a link to another directory of
/// the same owner (as a /tmp cleaner plus a rename, or a flipped symlink, would) is
/// refused at use: `socket_dir`, `bind_stream` and `connect_stream` fail and nothing
/// appears in that directory.
pub fn swapped_binding_is_refused_at_use(k: &Kit) -> Outcome {
    let s = &k.strategy;
    let (layout, id) = setup(k);
    let link = bp(k, &layout, &id);
    let l = ok("bind", s.bind_stream(&layout, &id, AGENT));
    let decoy = k.harness.scratch_dir("decoy");
    chmod(&decoy, 0o700);
    util::force_symlink(&decoy, &link);
    match s.socket_dir(&layout, &id) {
        Err(BindingError::Insecure { .. } | BindingError::Occupied { .. }) => {}
        other => panic!(
            "{}: socket_dir through a link swapped to {}: expected Insecure or Occupied, got {other:?}",
            sname(k),
            decoy.display()
        ),
    }
    assert!(
        s.bind_stream(&layout, &id, "other.sock").is_err(),
        "{}: bound through a swapped link",
        sname(k)
    );
    assert!(
        s.connect_stream(&layout, &id, AGENT).is_err(),
        "{}: connected through a swapped link",
        sname(k)
    );
    let in_decoy: Vec<_> =
        std::fs::read_dir(&decoy).expect("list decoy").flatten().map(|e| e.path()).collect();
    assert!(
        in_decoy.is_empty(),
        "{}: files appeared in the decoy directory: {in_decoy:?}",
        sname(k)
    );
    drop(l);
    Outcome::Passed
}

/// A box's binding held across dials, as a long-lived runtime holds it
/// ([`SocketBinding::open_box`]), re-checks at each use that its link still names the
/// directory it holds: a link swapped between two dials to another directory of the
/// owner (one with a listener at the agent's name) is refused at the second dial with
/// `Insecure`, although the held directory itself is untouched; nothing is dialled or
/// bound through the held directory past the swap, and the other directory receives
/// nothing (decision 0014).
pub fn held_binding_refuses_a_link_swapped_between_dials(k: &Kit) -> Outcome {
    let s = &k.strategy;
    let (layout, id) = setup(k);
    let link = bp(k, &layout, &id);
    let agent = util::socket(AGENT);
    let held = ok("open_box", s.open(&layout, &id));
    let l = ok("listen through the held binding", held.listen(&agent));
    util::set_nonblocking(&l);
    let first = ok("the first dial through the held binding", held.connect(&agent, None));
    drop(first);
    // The other directory: the owner's, 0700, with a live listener at the agent's name.
    let decoy = k.harness.scratch_dir("decoy");
    chmod(&decoy, 0o700);
    let decoy_listener =
        std::os::unix::net::UnixListener::bind(decoy.join(AGENT)).expect("bind in the decoy");
    decoy_listener.set_nonblocking(true).expect("non-blocking decoy");
    util::force_symlink(&decoy, &link);
    match held.connect(&agent, None) {
        Err(BindingError::Insecure { .. }) => {}
        other => panic!(
            "{}: the second dial through a held binding whose link was swapped to {} between dials: expected Insecure (refused at use), got {other:?}",
            sname(k),
            decoy.display()
        ),
    }
    assert!(
        held.listen(&util::socket("other.sock")).is_err(),
        "{}: bound through a held binding whose link was swapped",
        sname(k)
    );
    assert!(decoy_listener.accept().is_err(), "{}: the decoy directory received a dial", sname(k));
    let in_decoy: Vec<_> =
        std::fs::read_dir(&decoy).expect("list decoy").flatten().map(|e| e.file_name()).collect();
    assert_eq!(
        in_decoy,
        [std::ffi::OsString::from(AGENT)],
        "{}: files appeared in the decoy directory",
        sname(k)
    );
    drop(l);
    Outcome::Passed
}

/// Socket files a path strategy binds are 0600 even under `umask 000`: nobody but the
/// owner can use them whatever the directory above does.
///
/// The umask is process-wide, so the binds run in a forked child ([`fork::in_child`])
/// that sets `umask 000`; the files it bound stay, and their modes are read here.
pub fn socket_files_are_private_whatever_the_umask(k: &Kit) -> Outcome {
    let s = &k.strategy;
    let (layout, id) = setup(k);
    let bound = fork::in_child(|| {
        nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        let stream = s
            .bind_stream(&layout, &id, AGENT)
            .map_err(|e| format!("bind_stream under umask 000: {e}"))?;
        let dgram = s
            .bind_datagram(&layout, &id, "net.sock")
            .map_err(|e| format!("bind_datagram under umask 000: {e}"))?;
        // Kept bound until the child exits: the files are what the parent looks at.
        std::mem::forget((stream, dgram));
        Ok(())
    });
    if let Err(e) = bound {
        panic!("{}: in a child under umask 000: {e}", sname(k));
    }
    for name in [AGENT, "net.sock"] {
        let p = layout.sockets_dir(&id).join(name);
        let m = mode_of(&p);
        assert_eq!(
            m & 0o077,
            0,
            "{}: {} was created mode {m:04o} under umask 000",
            sname(k),
            p.display()
        );
    }
    Outcome::Passed
}

/// A box opened to look ([`Opening::Inspect`]: what `inspect`, `doctor`, the budget
/// check before a start and the release of a box nobody holds use) makes nothing for the
/// box, refuses every bind and dial (`Unsupported`: nothing was ensured or verified),
/// and shows the very addresses a binding opened for use holds (decision 0017).
pub fn inspecting_a_box_makes_nothing_and_refuses_use(k: &Kit) -> Outcome {
    let s = &k.strategy;
    let layout = k.harness.new_home();
    let id = k.harness.new_box(&layout);
    let sockets = [catalogue::AGENT, catalogue::READY];
    let looked =
        ok("open_box(Inspect)", s.clone().open_box(&layout, &id, Opening::Inspect, &sockets));
    if let Some(p) = looked.binding_path() {
        assert!(
            !exists_nofollow(&p),
            "{}: opening box {id} to inspect made its binding {}",
            sname(k),
            p.display()
        );
    }
    let refused = |what: &str, r: Result<(), BindingError>| match r {
        Err(BindingError::Unsupported { .. }) => {}
        other => panic!(
            "{}: {what} through a binding opened to inspect: expected Unsupported, got {other:?}",
            sname(k)
        ),
    };
    refused("listen", looked.listen(&catalogue::AGENT).map(drop));
    refused("connect", looked.connect(&catalogue::AGENT, None).map(drop));
    let used = ok("open_box(Use)", s.clone().open_box(&layout, &id, Opening::Use, &sockets));
    assert_eq!(
        looked.addresses(),
        used.addresses(),
        "{}: box {id} opened to inspect shows other addresses than opened for use",
        sname(k)
    );
    Outcome::Passed
}
