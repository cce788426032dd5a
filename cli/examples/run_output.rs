//! Embed the runtime: open a home, create and start a box, run a command in it and
//! read its output, remove the box.
//!
//! `cargo run -p boxsock --example run_output` (host backend: no isolation, runs
//! anywhere; needs `boxsock-agent` built: `cargo build -p boxsock-agent`).

use std::path::Path;

use boxsock::{CreateOptions, Runtime, RuntimeOptions, builtin_backends, builtin_strategies};

/// Run `echo` in a fresh box of `home` and return what it printed.
pub async fn demo(
    home: &Path,
    options: RuntimeOptions,
) -> Result<String, Box<dyn std::error::Error>> {
    let (rt, _report) = Runtime::open(home, options).await?;
    let b = rt.create(CreateOptions::new(boxsock::DEFAULT_STRATEGY, "host")).await?;
    let id = b.id.to_string();
    rt.start(&id).await?;
    let out = rt
        .command(&id, "sh")
        .args(["-c", "echo hello from box $BOX; exit 3"])
        .env("BOX", &id)
        .output()
        .await;
    rt.remove(&id, true).await?;
    let out = out?;
    assert_eq!(out.status.code(), Some(3));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let home = tempfile::tempdir()?;
    let options = RuntimeOptions::new(builtin_strategies(), builtin_backends());
    print!("{}", demo(&home.path().join("home"), options).await?);
    Ok(())
}
