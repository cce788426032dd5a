//! A long-lived runtime lets go of the binding it holds for a box that another process
//! removed or restarted (decision 0014): the next `list` drops it.

mod common;

use boxsock::{CreateOptions, ExecIo, LockMode, Runtime, RuntimeOptions};
use common::Env;

async fn exec_true(rt: &Runtime, id: &str) {
    let (mut out, mut err) = (|_: &[u8]| {}, |_: &[u8]| {});
    let io = ExecIo { stdin: None, stdout: &mut out, stderr: &mut err };
    assert_eq!(rt.exec(id, vec!["true".into()], vec![], io).await.unwrap(), 0);
}

/// Shared, as the CLI's runtimes are: several processes use the home at once.
fn shared(env: &Env) -> RuntimeOptions {
    let mut o = env.options();
    o.lock_mode = LockMode::Shared;
    o
}

#[tokio::test]
async fn a_box_removed_or_restarted_by_another_runtime_is_let_go_at_the_next_list() {
    let env = Env::new();
    let (long, _) = Runtime::open(&env.home, shared(&env)).await.unwrap();
    let (a, b) = (
        long.create(CreateOptions::new("short-symlink", "host")).await.unwrap().id.to_string(),
        long.create(CreateOptions::new("short-symlink", "host")).await.unwrap().id.to_string(),
    );
    let kept = long.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
    let kept = kept.id.to_string();
    for id in [&a, &b, &kept] {
        long.start(id).await.unwrap();
        exec_true(&long, id).await;
    }
    assert_eq!(long.held_bindings(), 3, "a started and dialled box's binding is held");

    // Another process's runtime (the CLI, say) removes `a` and restarts `b`.
    let (other, _) = Runtime::open(&env.home, shared(&env)).await.unwrap();
    other.remove(&a, true).await.unwrap();
    other.stop(&b, None).await.unwrap();
    other.start(&b).await.unwrap();
    other.close();

    // Until it looks, the long-lived runtime still holds all three (the failure mode:
    // without the prune in `list`, these stay for the runtime's life).
    assert_eq!(long.held_bindings(), 3);
    long.list().unwrap();
    assert_eq!(long.held_bindings(), 1, "only the untouched box's binding stays held");
    // The kept box is still dialled through its held binding; the restarted one is
    // opened again and works.
    exec_true(&long, &kept).await;
    exec_true(&long, &b).await;
    assert_eq!(long.held_bindings(), 2);
    for id in [&b, &kept] {
        long.remove(id, true).await.unwrap();
    }
    long.list().unwrap();
    assert_eq!(long.held_bindings(), 0);
}
