//! Choose the socket strategy in code: list what is registered, pick one by name, and
//! see where the box's sockets really are (`inspect`).
//!
//! `cargo run -p boxsock --example choose_strategy -- abstract` (or `direct`,
//! `short-symlink`, or any strategy crate you link).

use std::path::Path;

use boxsock::{CreateOptions, Runtime, RuntimeOptions, builtin_backends, builtin_strategies};

/// Create a box with `strategy`, run a command in it, and return its agent socket's
/// address as `inspect` reports it.
pub async fn demo(
    home: &Path,
    options: RuntimeOptions,
    strategy: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    if options.strategies.get(strategy).is_err() {
        return Err(format!(
            "no strategy {strategy:?}; registered: {}",
            options.strategies.names().join(", ")
        )
        .into());
    }
    let (rt, _report) = Runtime::open(home, options).await?;
    let id = rt.create(CreateOptions::new(strategy, "host")).await?.id.to_string();
    rt.start(&id).await?;
    let status = rt.command(&id, "true").status().await;
    let info = rt.inspect(&id);
    rt.remove(&id, true).await?;
    if !status?.success() {
        return Err("`true` failed".into());
    }
    let info = info?;
    let agent =
        info.sockets.iter().find(|s| s.socket == "agent").ok_or("no agent socket listed")?;
    Ok(agent.address.clone().unwrap_or_default())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let strategy = std::env::args().nth(1).unwrap_or_else(|| "abstract".into());
    let home = tempfile::tempdir()?;
    let options = RuntimeOptions::new(builtin_strategies(), builtin_backends());
    println!("strategies: {}", options.strategies.names().join(", "));
    println!("{strategy}: agent at {}", demo(&home.path().join("home"), options, &strategy).await?);
    Ok(())
}
