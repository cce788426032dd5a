//! Profile driver for docs/performance.md: binds (and unlinks) `N` sockets through a
//! strategy under a home of a given depth, or at a short direct path, so that
//! `perf record -e cpu-clock -g` can show where a bind's time goes in the kernel.
//!
//! `cargo run --release -p boxsock-benches --example bind_profile -- <short-symlink|direct|direct-short> <depth> <n> [connect]`
//!
//! With `connect`, it connects `N` times to a live listener instead (an acceptor thread
//! drains the connections).

use boxsock_core::{Binder, Socket, SocketKind};
use std::os::unix::net::{UnixListener, UnixStream};

use boxsock_benches::{Subject, home_of_len, strategies};

const C: Socket =
    Socket { name: "c", kind: SocketKind::Stream, binder: Binder::Runtime, derived: &[] };
const P: Socket =
    Socket { name: "p", kind: SocketKind::Stream, binder: Binder::Runtime, derived: &[] };

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().map(String::as_str).unwrap_or("short-symlink");
    let depth: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(300);
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let root = tempfile::Builder::new().prefix("bsp").tempdir_in("/tmp").expect("tempdir");
    let base = tempfile::Builder::new().prefix("bsp").tempdir_in("/tmp").expect("tempdir");
    let home = home_of_len(&root.path().join("h"), depth);
    let connect = args.get(3).is_some_and(|a| a == "connect");
    if connect {
        let (path, listener) = if what == "direct-short" {
            let p = base.path().join("c.sock");
            let l = UnixListener::bind(&p).expect("bind");
            (p, l)
        } else {
            let reg = strategies().into_iter().find(|r| r.name == what).expect("strategy");
            let s = Subject::new(reg, &home, base.path()).expect("subject");
            let held = s.open();
            let addr = held.address(&C).expect("address");
            let l = held.listen(&C).expect("bind").into_inner();
            (addr.as_path().expect("path").to_path_buf(), l)
        };
        std::thread::spawn(move || {
            for c in listener.incoming() {
                drop(c)
            }
        });
        for _ in 0..n {
            drop(UnixStream::connect(&path).expect("connect"));
        }
        return;
    }
    if what == "direct-short" {
        let p = base.path().join("f.sock");
        for _ in 0..n {
            drop(UnixListener::bind(&p).expect("bind"));
            std::fs::remove_file(&p).expect("unlink");
        }
        return;
    }
    let reg = strategies().into_iter().find(|r| r.name == what).expect("strategy");
    let s = Subject::new(reg, &home, base.path()).expect("subject");
    let held = s.open();
    let addr = held.address(&P).expect("address");
    for _ in 0..n {
        drop(held.listen(&P).expect("bind"));
        std::fs::remove_file(addr.as_path().expect("path")).expect("unlink");
    }
}
