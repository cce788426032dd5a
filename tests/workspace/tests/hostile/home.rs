//! Attacks on the runtime's home by another local user (`nobody`, in forked children
//! that really drop their privileges): a home, an ancestor or a symlink on the way that
//! they own, a box directory they swapped in, and files they could read.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use boxsock::{CreateOptions, Runtime, RuntimeError};
use boxsock_tests::reliability::Outcome;
use boxsock_tests::scenario;

use crate::attacks::{
    NEED_ROOT, NOBODY, World, cstr, exec_code, is_root, nobody, rt_options, tokio_rt,
};

/// Open `home` for writing and expect [`RuntimeError::InsecureHome`] naming `path`, its
/// reason mentioning every one of `needles`. Returns the message.
fn expect_insecure(w: &World, home: &Path, path: &Path, needles: &[&str]) -> String {
    let r = tokio_rt().block_on(Runtime::open(home, rt_options(w)));
    match r {
        Err(e @ RuntimeError::InsecureHome { .. }) => {
            let RuntimeError::InsecureHome { path: p, reason } = &e else { unreachable!() };
            assert_eq!(p, path, "{e}");
            for n in needles {
                assert!(reason.contains(n), "{e}: should mention {n:?}");
            }
            e.to_string()
        }
        Err(e) => panic!("expected InsecureHome for {}, got {e}", path.display()),
        Ok(_) => panic!("home {} was used", home.display()),
    }
}

fn boxsock_cli(home: &Path, w: &World) -> Command {
    let mut c = Command::new(
        boxsock_host::dev::built_binaries(&["boxsock", "boxsock-agent"]).join("boxsock"),
    );
    c.env("BOXSOCK_HOME", home)
        .env("BOXSOCK_LINK_BASE", &w.base)
        .env("BOXSOCK_HELPER_DIR", crate::attacks::agent_dir())
        .env_remove("BOXSOCK_STRATEGY")
        .env_remove("BOXSOCK_BACKEND")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

scenario!(
    home_precreated_by_nobody,
    "Attacks",
    "`nobody` pre-creates the home (in a 1777 base) as its own directory, mode 0777, with a `boxes/` directory; then root opens it (library) and runs `boxsock create` (CLI)",
    {
        (|| -> Outcome {
            if !is_root() {
                return Outcome::Skipped(NEED_ROOT.into());
            }
            let w = World::new();
            let home = w.base.join("home-by-nobody");
            let r = nobody::run(&[
                nobody::Act::Mkdir(cstr(&home), 0o777),
                nobody::Act::Chmod(cstr(&home), 0o777),
                nobody::Act::Mkdir(cstr(&home.join("boxes")), 0o777),
                nobody::Act::Chmod(cstr(&home.join("boxes")), 0o777),
            ])
            .unwrap();
            assert_eq!(r, [0, 0, 0, 0], "nobody could not prepare the home");
            let lib = expect_insecure(&w, &home, &home, &["owned by uid 65534"]);
            let o = boxsock_cli(&home, &w).args(["--backend", "host", "create"]).output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            assert!(
                !o.status.success() && err.contains("refusing home") && err.contains("65534"),
                "{err}"
            );
            let mut left: Vec<String> = std::fs::read_dir(&home)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            left.sort();
            assert_eq!(left, ["boxes"], "root wrote into nobody's home");
            assert_eq!(std::fs::read_dir(home.join("boxes")).unwrap().count(), 0);
            let lib = lib.replace(w.root.path().to_str().unwrap(), "<root>");
            Outcome::Passed(format!(
                "refused before anything was written: {lib}; the CLI too, in one line"
            ))
        })()
    }
);

scenario!(
    home_ancestor_or_symlink_owned_by_nobody,
    "Attacks",
    "the home lies under a directory `nobody` owns, or is reached through a symlink `nobody` owns; then root opens it",
    {
        (|| -> Outcome {
            if !is_root() {
                return Outcome::Skipped(NEED_ROOT.into());
            }
            let w = World::new();
            let nest = w.base.join("nest");
            let link = w.base.join("link-by-nobody");
            let real = w.root.path().join("real-home");
            std::fs::create_dir(&real).unwrap();
            let r = nobody::run(&[
                nobody::Act::Mkdir(cstr(&nest), 0o755),
                nobody::Act::Symlink(cstr(&real), cstr(&link)),
            ])
            .unwrap();
            assert_eq!(r, [0, 0]);
            let home = nest.join("home");
            std::fs::create_dir(&home).unwrap();
            let a =
                expect_insecure(&w, &home, &nest, &["owned by uid 65534", "rename the home away"]);
            let b = expect_insecure(&w, &link, &link, &["symlink", "65534"]);
            // The same home through a symlink of ours is fine.
            let ours = w.root.path().join("our-link");
            std::os::unix::fs::symlink(&real, &ours).unwrap();
            tokio_rt().block_on(Runtime::open(&ours, rt_options(&w))).unwrap();
            assert!(real.join(".boxsock-home").is_file());
            let r = w.root.path().to_str().unwrap().to_owned();
            Outcome::Passed(
                format!("{a}; {b}; through root's own symlink the home opens")
                    .replace(&r, "<root>"),
            )
        })()
    }
);

scenario!(
    box_dir_swapped_by_nobody_after_start,
    "Attacks",
    "a box runs; its home's `boxes/` is made 0777 (a mistake), its `boxes/<id>` is renamed away and `nobody` creates its own `boxes/<id>/sockets` (0777) in its place and listens at `agent.sock` there; then the owner runs exec, start, and reopens the home",
    {
        (|| -> Outcome {
            if !is_root() {
                return Outcome::Skipped(NEED_ROOT.into());
            }
            let w = World::new();
            let tokio = tokio_rt();
            tokio.block_on(async {
                let (rt, _) = Runtime::open(w.layout.home(), rt_options(&w)).await.unwrap();
                let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
                let id = b.id.to_string();
                rt.start(&id).await.unwrap();
                assert_eq!(exec_code(&rt, &id, &["true"]).await.unwrap(), 0);
                let boxes = w.layout.boxes_dir();
                std::fs::set_permissions(w.layout.home(), std::fs::Permissions::from_mode(0o755)).unwrap();
                std::fs::set_permissions(&boxes, std::fs::Permissions::from_mode(0o777)).unwrap();
                let dir = w.layout.box_dir(&b.id);
                let moved = boxes.join(format!("{id}.moved"));
                std::fs::rename(&dir, &moved).unwrap();
                let r = nobody::run(&[
                    nobody::Act::Mkdir(cstr(&dir), 0o777),
                    nobody::Act::Chmod(cstr(&dir), 0o777),
                    nobody::Act::Mkdir(cstr(&dir.join("sockets")), 0o777),
                ])
                .unwrap();
                assert_eq!(r, [0, 0, 0]);
                // nobody listens where the box's agent was: a dial by the path string reaches it.
                let squat = dir.join("sockets").join("agent.sock");
                let listener = boxsock_conformance::fork::listen_in_child(&boxsock::SocketAddress::Path(squat.clone()))
                    .unwrap_or_else(|r| panic!("nobody could not listen at {}: {r:?}", squat.display()));
                let refused = |e: &RuntimeError| matches!(e, RuntimeError::InsecureHome { .. });
                let exec = exec_code(&rt, &id, &["true"]).await.unwrap_err();
                assert!(refused(&exec), "exec through nobody's directory: {exec}");
                let e = exec.to_string();
                assert!(e.contains("777") || e.contains("65534"), "{e}");
                let stop = rt.stop(&id, None).await;
                let start = rt.start(&id).await;
                assert!(matches!(&start, Err(e) if refused(e)), "start: {start:?}");
                let reopen = Runtime::open(w.layout.home(), rt_options(&w)).await;
                let reopen_err = match reopen {
                    Err(e @ RuntimeError::InsecureHome { .. }) => e.to_string(),
                    Err(e) => panic!("reopen: {e}"),
                    Ok(_) => panic!("a home whose boxes/ is 0777 was opened"),
                };
                assert!(reopen_err.contains("boxes") && reopen_err.contains("777"), "{reopen_err}");
                // Root deletes nothing it cannot prove it created: nobody's socket stays.
                let left = std::fs::symlink_metadata(&squat)
                    .unwrap_or_else(|e| panic!("nobody's socket in its own directory was deleted by the owner's exec, stop, start or reopen: {e}"));
                assert_eq!(left.uid(), NOBODY, "nobody's socket was replaced");
                // The positive control: a naive dialer (connect by the path string) reaches
                // nobody's listener.
                let naive = std::os::unix::net::UnixStream::connect(&squat).expect("control: the naive dialer reached nothing");
                let cred = nix::sys::socket::getsockopt(&naive, nix::sys::socket::sockopt::PeerCredentials).unwrap();
                assert_eq!(cred.uid(), NOBODY, "control: the naive dialer did not reach nobody's listener");
                drop((naive, listener));
                // Clean up: put the box back, make boxes/ private again, remove it.
                std::fs::remove_dir_all(&dir).unwrap();
                std::fs::rename(&moved, &dir).unwrap();
                std::fs::set_permissions(&boxes, std::fs::Permissions::from_mode(0o700)).unwrap();
                drop(stop);
                rt.remove(&id, true).await.unwrap();
                Outcome::Passed(
                    format!("exec refused before dialling: {e}; start refused too; reopening refused: {reopen_err}; nobody's socket in its directory was left alone (stop removes only sockets in a socket directory reached through checked directories of the owner's); beside it, a naive dialer (connect to `<home>/boxes/<id>/sockets/agent.sock` by the path string) reached nobody's listener there")
                        .replace(w.root.path().to_str().unwrap(), "<root>"),
                )
            })
        })()
    }
);

scenario!(
    home_files_private_under_umask_000,
    "Attacks",
    "under `umask 000`, `boxsock create -e DB_PASSWORD=…` then `start` in a new home; then the modes of the home, store, WAL, shared memory, lock and box log, and `nobody` creating a file in the home",
    {
        (|| -> Outcome {
            if !is_root() {
                return Outcome::Skipped(NEED_ROOT.into());
            }
            use std::os::unix::process::CommandExt;
            let w = World::new();
            let home = w.root.path().join("umask-home");
            let cli = |args: &[&str]| {
                let mut c = boxsock_cli(&home, &w);
                c.args(["--backend", "host"]).args(args);
                // SAFETY: umask is async-signal-safe; called in the child before exec.
                unsafe {
                    c.pre_exec(|| {
                        libc::umask(0);
                        Ok(())
                    });
                }
                let o = c.output().unwrap();
                assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
                String::from_utf8_lossy(&o.stdout).trim().to_owned()
            };
            let id = cli(&["create", "-e", "DB_PASSWORD=hunter2"]);
            cli(&["start", &id]);
            let mode = |p: &Path| {
                std::fs::symlink_metadata(p)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                    .mode()
                    & 0o777
            };
            let mut seen = Vec::new();
            for (rel, want) in [
                ("", 0o700),
                ("boxsock.db", 0o600),
                ("boxsock.db-wal", 0o600),
                ("boxsock.db-shm", 0o600),
                ("boxsock.lock", 0o600),
                (".boxsock-home", 0o600),
                (&format!("boxes/{id}/logs/box.log"), 0o600),
                ("boxes", 0o700),
            ] {
                let p = if rel.is_empty() { home.clone() } else { home.join(rel) };
                assert_eq!(mode(&p), want, "{} under umask 000", p.display());
                seen.push(format!(
                    "{} {:o}",
                    if rel.is_empty() { "home" } else { rel.split('/').next_back().unwrap() },
                    want
                ));
            }
            let r = nobody::run(&[nobody::Act::CreateFile(cstr(&home.join("planted")))]).unwrap();
            assert_eq!(r, [-i64::from(libc::EACCES)], "nobody could write into the home");
            let o = boxsock_cli(&home, &w).args(["rm", "-f", &id]).output().unwrap();
            assert!(o.status.success());
            assert_eq!(std::fs::metadata(&home).unwrap().uid(), 0);
            let _ = NOBODY;
            Outcome::Passed(format!(
                "{}; nobody's open(O_CREAT) in the home: EACCES",
                seen.join(", ")
            ))
        })()
    }
);
