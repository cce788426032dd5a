//! Budget proofs: short-symlink addresses fit whatever the home length, and there is no
//! dead zone where the runtime's own names fit but a name the VMM derives does not.
//! Pure arithmetic: `address` does no I/O.

use boxsock_core::catalogue::{self, MAX_FILE_NAME_LEN};
use boxsock_core::{
    BindingError, BoxId, BoxLayout, PathStrategy, Platform, SocketAddress, StrategyConfig, budget,
};
use boxsock_direct::Direct;
use boxsock_short_symlink::ShortSymlink;

/// A path strategy's address of socket file `f` of box `id`: the core's one derivation
/// ([`boxsock_core::boxbinding::path_address`]) from the strategy's `socket_base`, as
/// the box's binding holds it.
trait Addr {
    fn address(&self, l: &BoxLayout, id: &BoxId, f: &str) -> Result<SocketAddress, BindingError>;
}

impl<S: PathStrategy> Addr for S {
    fn address(&self, l: &BoxLayout, id: &BoxId, f: &str) -> Result<SocketAddress, BindingError> {
        boxsock_core::boxbinding::path_address(&self.socket_base(l, id)?, f)
    }
}

/// The longest name libkrun 1.19 derives for a unixgram net backend (`krun-net-<pid>-<n>.sock`
/// with the largest pid and counter).
const KRUN_DERIVED: &str = "krun-net-4194304-4294967295.sock";

/// The worst-case strategy: default base `/tmp`, default prefix, a 10-digit uid.
fn worst_case_strategy() -> ShortSymlink {
    let config =
        StrategyConfig { base_dir: "/tmp".into(), uid: u32::MAX, ..StrategyConfig::default() };
    assert_eq!(config.uid.to_string().len(), 10);
    ShortSymlink::new(&config).unwrap()
}

fn longest_id() -> BoxId {
    BoxId::parse(&"i".repeat(BoxId::MAX_LEN)).unwrap()
}

/// Every concrete name a box's sockets use: each catalogue socket with its derived names,
/// libkrun ≤ 1.18's `-krun.sock` suffix on the net socket, and libkrun 1.19's sibling.
fn concrete_names() -> Vec<String> {
    let mut names: Vec<String> = [catalogue::AGENT, catalogue::READY, catalogue::NET]
        .iter()
        .flat_map(|s| s.all_file_names().into_iter().map(|(_, f)| f))
        .collect();
    names.push("net.sock-krun.sock".into());
    names.push(KRUN_DERIVED.into());
    names
}

fn homes() -> impl Iterator<Item = BoxLayout> {
    // Every length from 1 to 300, then coarser up to PATH_MAX.
    (1..=300usize)
        .chain((301..=4096).step_by(61))
        .chain([4095, 4096])
        .map(|n| BoxLayout::new(format!("/{}", "h".repeat(n - 1))))
}

#[test]
fn worst_case_concrete_names_fit_the_portable_limit_for_any_home_length() {
    let s = worst_case_strategy();
    let id = longest_id();
    for layout in homes() {
        for name in concrete_names() {
            let addr = s.address(&layout, &id, &name).unwrap();
            budget::check_limit(&name, &addr, Platform::portable_sun_len()).unwrap();
            // The address does not depend on the home at all.
            assert!(addr.as_path().unwrap().starts_with("/tmp/boxsock-4294967295/"));
        }
    }
}

#[test]
fn the_longest_allowed_file_name_fits_where_the_arithmetic_allows() {
    let s = worst_case_strategy();
    let id = longest_id();
    let layout = BoxLayout::new(format!("/{}", "h".repeat(4095)));
    let prefix_len = "/tmp/boxsock-4294967295/".len() + BoxId::MAX_LEN + 1;
    // Longest file name the worst-case address has room for on every platform.
    let portable_max = Platform::portable_sun_len() - 1 - prefix_len;
    assert_eq!(portable_max, boxsock_short_symlink::PORTABLE_MAX_FILE_NAME_LEN);

    let name = "n".repeat(portable_max.min(MAX_FILE_NAME_LEN));
    let addr = s.address(&layout, &id, &name).unwrap();
    budget::check_limit(&name, &addr, Platform::portable_sun_len()).unwrap();

    let longest = "n".repeat(MAX_FILE_NAME_LEN);
    let addr = SocketAddress::Path(s.link_path(&id).join(&longest));
    budget::check(&longest, &addr, Platform::Linux).unwrap();
    // The catalogue's limit is exactly what the worst case leaves on every platform.
    assert_eq!(MAX_FILE_NAME_LEN, portable_max);
    budget::check(&longest, &addr, Platform::MacOs).unwrap();
    let over = SocketAddress::Path(s.link_path(&id).join("n".repeat(MAX_FILE_NAME_LEN + 1)));
    assert!(budget::check("over", &over, Platform::MacOs).is_err());
}

#[test]
fn no_dead_zone_where_direct_fits_ready_but_not_the_derived_name() {
    let s = worst_case_strategy();
    let id = BoxId::parse("abc123").unwrap();
    let mut dead_zone_homes = 0;
    for n in 1..=200usize {
        let layout = BoxLayout::new(format!("/{}", "d".repeat(n - 1)));
        let ready_direct = Direct::default().address(&layout, &id, "ready.sock");
        let krun_direct = Direct::default().address(&layout, &id, KRUN_DERIVED);
        if ready_direct.is_ok() && matches!(krun_direct, Err(BindingError::PathTooLong { .. })) {
            dead_zone_homes += 1;
            s.address(&layout, &id, "ready.sock").unwrap();
            s.address(&layout, &id, KRUN_DERIVED).unwrap();
        }
    }
    // The range exists (22 home lengths wide: the difference between the two names).
    assert_eq!(dead_zone_homes, KRUN_DERIVED.len() - "ready.sock".len());
}

#[test]
fn a_base_too_long_fails_at_address_with_path_too_long() {
    let config = StrategyConfig {
        base_dir: format!("/{}", "b".repeat(120)).into(),
        ..StrategyConfig::default()
    };
    let s = ShortSymlink::new(&config).unwrap();
    let layout = BoxLayout::new("/h");
    let id = BoxId::parse("abc").unwrap();
    match s.address(&layout, &id, "agent.sock").unwrap_err() {
        BindingError::PathTooLong { socket, path, len, limit } => {
            assert_eq!(socket, "agent.sock");
            assert!(path.starts_with(&format!("/{}", "b".repeat(120))), "{path}");
            assert_eq!(len, path.len());
            assert_eq!(limit, Platform::current().sun_len());
        }
        other => panic!("wrong variant: {other}"),
    }
}

#[test]
fn boundaries_at_the_platform_limit() {
    // Choose a base so the address of a 10-byte name is exactly limit-1 and limit bytes.
    let id = BoxId::parse("b").unwrap();
    let layout = BoxLayout::new("/h");
    let limit = Platform::current().sun_len();
    for (target_len, ok) in [(limit - 1, true), (limit, false)] {
        // "/<base>/boxsock-7/b/x.........": 1 + base + "/boxsock-7/b/" (13) + 10
        let base_len = target_len - 1 - 13 - 10;
        let config = StrategyConfig {
            base_dir: format!("/{}", "b".repeat(base_len)).into(),
            uid: 7,
            ..StrategyConfig::default()
        };
        let s = ShortSymlink::new(&config).unwrap();
        let r = s.address(&layout, &id, "x123456789");
        if ok {
            assert_eq!(r.unwrap().byte_len(), target_len);
        } else {
            assert!(matches!(r, Err(BindingError::PathTooLong { len, .. }) if len == target_len));
        }
    }
}
