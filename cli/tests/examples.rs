//! The examples in `cli/examples/` run here, through the same `demo` functions their
//! `main`s call (on temp homes and link bases, the host backend).

mod common;

#[allow(dead_code)]
#[path = "../examples/run_output.rs"]
mod run_output;

#[allow(dead_code)]
#[path = "../examples/interactive.rs"]
mod interactive;

#[allow(dead_code)]
#[path = "../examples/choose_strategy.rs"]
mod choose_strategy;

use common::Env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_run_output() {
    let env = Env::new();
    let out = run_output::demo(&env.home, env.options()).await.unwrap();
    assert!(out.starts_with("hello from box "), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_interactive() {
    let env = Env::new();
    let (screen, code) = interactive::demo(&env.home, env.options()).await.unwrap();
    assert_eq!(code, 4, "{screen}");
    assert!(screen.contains("50 132") && screen.contains("interrupted-130"), "{screen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_choose_strategy() {
    let env = Env::new();
    let at = choose_strategy::demo(&env.home, env.options(), "abstract").await.unwrap();
    assert!(at.starts_with('@'), "{at}");
    let err = choose_strategy::demo(&env.home, env.options(), "nope").await.unwrap_err();
    assert!(err.to_string().contains("short-symlink"), "{err}");
}
