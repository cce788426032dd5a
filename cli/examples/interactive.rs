//! Stream an interactive session: a shell on a pty in the box, driven from code (type
//! lines, read the screen as it streams, resize the terminal, interrupt with Ctrl-C).
//! The `boxsock exec -it` command does the same with your terminal in raw mode.
//!
//! `cargo run -p boxsock --example interactive`

use std::path::Path;
use std::time::Duration;

use boxsock::exec::Stdio;
use boxsock::{CreateOptions, Runtime, RuntimeOptions, builtin_backends, builtin_strategies};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Read the child's screen until `want` shows up (bounded by 30 s).
async fn read_until<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    screen: &mut String,
    want: &str,
) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(30), async {
        while !screen.contains(want) {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            screen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        Ok(())
    })
    .await
    .map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no {want:?} on the screen: {screen:?}"),
        )
    })?
}

/// Open an interactive shell (job control: Ctrl-C interrupts the foreground job,
/// not the shell) on a 24×80 pty, check the size, resize to 50×132, interrupt a
/// `sleep` with Ctrl-C; return the screen and the shell's exit code.
pub async fn demo(
    home: &Path,
    options: RuntimeOptions,
) -> Result<(String, i32), Box<dyn std::error::Error>> {
    let (rt, _report) = Runtime::open(home, options).await?;
    let id = rt.create(CreateOptions::new(boxsock::DEFAULT_STRATEGY, "host")).await?.id.to_string();
    rt.start(&id).await?;
    let mut child = rt
        .command(&id, "/bin/sh")
        .arg("-i")
        .window_size(24, 80)
        .stdin(Stdio::Piped)
        .stdout(Stdio::Piped)
        .spawn()
        .await?;
    let (mut keys, mut screen_stream) =
        (child.stdin.take().ok_or("no stdin")?, child.stdout.take().ok_or("no stdout")?);
    let mut screen = String::new();
    keys.write_all(b"stty size\n").await?;
    read_until(&mut screen_stream, &mut screen, "24 80").await?;
    child.resize(50, 132)?;
    keys.write_all(b"stty size\n").await?;
    read_until(&mut screen_stream, &mut screen, "50 132").await?;
    keys.write_all(b"sleep 30\n").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    keys.write_all(b"\x03").await?; // Ctrl-C: the pty sends SIGINT to `sleep`.
    keys.write_all(b"echo interrupted-$?\n").await?;
    read_until(&mut screen_stream, &mut screen, "interrupted-130").await?;
    keys.write_all(b"exit 4\n").await?;
    drop(keys);
    let mut rest = Vec::new();
    screen_stream.read_to_end(&mut rest).await?;
    screen.push_str(&String::from_utf8_lossy(&rest));
    let status = child.wait().await?;
    rt.remove(&id, true).await?;
    Ok((screen, status.shell_code()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let home = tempfile::tempdir()?;
    let options = RuntimeOptions::new(builtin_strategies(), builtin_backends());
    let (screen, code) = demo(&home.path().join("home"), options).await?;
    println!("{screen}\n(shell exited {code})");
    Ok(())
}
