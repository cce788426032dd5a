//! The image verbs: `pull`, `login`, `images`, `image import|inspect|save|prune`, `rmi`.
//! They work on the home's image store (`<home>/images`), whose records are in the
//! home's SQLite store (`Runtime::images`, decision 0019).

use std::collections::HashMap;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use boxsock::boxsock_core::echo;
use boxsock::boxsock_image::pull::docker_credentials;
use boxsock::boxsock_image::{
    AddReport, Digest, ImageError, ImageRecord, ImageStore, ImportOptions, Progress, PullOptions,
    Reference, Removed,
};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::args::Global;
use crate::home::Writes;
use crate::{Failure, errln, exit, json, outln};

impl From<ImageError> for Failure {
    fn from(e: ImageError) -> Self {
        Failure(e.to_string(), exit::FAILED)
    }
}

/// The home's image store, the home opened (made, checked) as every writing verb does.
async fn store(g: &Global) -> Result<ImageStore, Failure> {
    let rt = g.open(Writes::Yes).await?;
    Ok(rt.images()?)
}

/// The home's image store opened read-only (`images`, `image inspect`, `image save`):
/// the home is never created, recovered, upgraded or swept (as `ls`); `None` when it
/// does not exist.
async fn read_only_store(g: &Global) -> Result<Option<ImageStore>, Failure> {
    match g.open_read_only().await? {
        Some(rt) => Ok(Some(rt.images()?)),
        None => Ok(None),
    }
}

/// `image import PATH`: every image of an OCI layout directory, OCI archive or `docker
/// save` tarball; prints each image's id and names.
pub(crate) async fn import(
    g: &Global,
    path: PathBuf,
    name: Option<String>,
    quiet: bool,
) -> Result<u8, Failure> {
    let store = store(g).await?;
    let opts = ImportOptions { name, ..Default::default() };
    let reports = store
        .import(&path, &opts)
        .map_err(|e| Failure(format!("import {}: {e}", echo::path(&path)), exit::FAILED))?;
    for r in &reports {
        print_added(r, quiet)?;
    }
    Ok(0)
}

/// One line per image added: its id, then its names (none: `<none>`).
fn print_added(r: &AddReport, quiet: bool) -> Result<(), Failure> {
    for note in &r.notes {
        errln!("boxsock: note: {note}");
    }
    print_image(&r.image, quiet)
}

fn print_image(image: &ImageRecord, quiet: bool) -> Result<(), Failure> {
    if quiet {
        outln!("{}", image.id);
    } else if image.names.is_empty() {
        outln!("{} <none>", image.id);
    } else {
        outln!("{} {}", image.id, image.names.join(" "));
    }
    Ok(())
}

/// The file `boxsock login` keeps credentials in: docker's `config.json` format, 0600,
/// in the home (0700).
fn auth_file(g: &Global) -> Result<PathBuf, Failure> {
    Ok(g.home()?.join("auth.json"))
}

/// The registry part of `reference` as references name it (`docker.io` for Docker Hub).
fn registry_of(registry: &str) -> Result<String, Failure> {
    let r: Reference = format!("{registry}/boxsock-login-probe").parse().map_err(|_| {
        Failure(format!("{} is not a registry host[:port]", echo::echo(registry)), exit::FAILED)
    })?;
    Ok(r.registry)
}

/// `pull REF`: registry v2; credentials from `boxsock login`, else docker's config.
pub(crate) async fn pull(
    g: &Global,
    reference: String,
    insecure: Vec<String>,
    quiet: bool,
) -> Result<u8, Failure> {
    let parsed: Reference = reference.parse()?;
    let store = store(g).await?;
    let credentials = docker_credentials(&auth_file(g)?, &parsed.registry)?;
    let bars = (!quiet && std::io::stderr().is_terminal()).then(Bars::new);
    let mut opts = PullOptions { insecure_registries: insecure, credentials, ..Default::default() };
    if let Some(b) = &bars {
        let b = b.clone();
        opts.progress = Some(Arc::new(move |p: &Progress| b.update(p)));
    }
    let r = store.pull(&reference, &opts).await;
    if let Some(b) = &bars {
        b.finish();
    }
    let r =
        r.map_err(|e| Failure(format!("pull {}: {e}", echo::echo(&reference)), exit::FAILED))?;
    for note in &r.notes {
        errln!("boxsock: note: {note}");
    }
    if !quiet && !std::io::stderr().is_terminal() {
        tracing::info!(
            image = %r.image.id,
            downloaded = r.bytes_downloaded(),
            unpacked = r.unpacked.len(),
            "pulled"
        );
    }
    print_image(&r.image, quiet)?;
    Ok(0)
}

/// One progress bar per layer blob on stderr, drawn only on a terminal.
#[derive(Clone)]
struct Bars {
    multi: MultiProgress,
    bars: Arc<Mutex<HashMap<Digest, ProgressBar>>>,
}

impl Bars {
    fn new() -> Bars {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Arc::default(),
        }
    }

    fn bar(&self, blob: &Digest, total: u64) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        bars.entry(blob.clone())
            .or_insert_with(|| {
                let style =
                    ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> ");
                let b = self.multi.add(ProgressBar::new(total).with_style(style));
                b.set_prefix(blob.hex()[..12].to_owned());
                b
            })
            .clone()
    }

    fn update(&self, p: &Progress) {
        match p {
            Progress::Download { blob, done, total } => {
                let b = self.bar(blob, *total);
                b.set_length(*total);
                b.set_position(*done);
            }
            Progress::BlobPresent { blob } => {
                self.bar(blob, 0).finish_with_message("already here");
            }
            Progress::Unpacked { diff_id, bytes } => {
                let _ = self.multi.println(format!("{} unpacked ({bytes} bytes)", short(diff_id)));
            }
            Progress::LayerPresent { .. } => {}
        }
    }

    fn finish(&self) {
        for b in self.bars.lock().unwrap_or_else(|e| e.into_inner()).values() {
            if !b.is_finished() {
                b.finish();
            }
        }
    }
}

fn short(d: &Digest) -> &str {
    &d.hex()[..12]
}

/// `login REGISTRY -u USER [--password-stdin]`: the password is read from stdin (one
/// line) with `--password-stdin`, else prompted for on the terminal without echo (stdin
/// must then be a terminal); kept with the user name in `<home>/auth.json` (0600), for
/// `pull`.
pub(crate) async fn login(
    g: &Global,
    registry: String,
    username: String,
    password_stdin: bool,
) -> Result<u8, Failure> {
    if !password_stdin && !crate::tty::stdin_is_tty() {
        return Err(Failure(
            "login prompts for the password on a terminal, and stdin is not one: pass \
             --password-stdin to read it from stdin"
                .into(),
            exit::FAILED,
        ));
    }
    let key = registry_of(&registry)?;
    let password = match password_stdin {
        true => read_line_blocking().map_err(|e| {
            Failure(format!("cannot read the password from stdin: {e}"), exit::FAILED)
        })?,
        false => prompt_password().await?,
    };
    let password = password.strip_suffix('\n').unwrap_or(&password);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(Failure("no password given".into(), exit::FAILED));
    }
    if username.is_empty() || username.contains(':') {
        return Err(Failure(
            format!("user name {} is empty or holds a ':'", echo::echo(&username)),
            exit::FAILED,
        ));
    }
    // The home is made and checked as by every writing verb (0700, owned by the user).
    drop(g.open(Writes::Yes).await?);
    let path = auth_file(g)?;
    let mut config: serde_json::Value = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|_| Failure(format!("{} is not JSON", echo::path(&path)), exit::FAILED))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(Failure(format!("read {}: {e}", echo::path(&path)), exit::FAILED)),
    };
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    if !config["auths"].is_object() {
        config["auths"] = serde_json::json!({});
    }
    config["auths"][&key] = serde_json::json!({ "auth": auth });
    let bytes = serde_json::to_vec_pretty(&config).expect("JSON serialises");
    boxsock::boxsock_core::atomic::AtomicWrite::new(0o600)
        .write(&path, &bytes)
        .map_err(|e| Failure(e.to_string(), exit::FAILED))?;
    errln!("Login stored for {} in {}", echo::echo(&key), echo::path(&path));
    Ok(0)
}

/// A size in bytes for people (1000-based, as docker prints them).
fn human(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 { format!("{bytes}B") } else { format!("{v:.1}{}", units[u]) }
}

/// One line of stdin (at most 64 KiB).
fn read_line_blocking() -> std::io::Result<String> {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::stdin().lock().take(64 * 1024).read_line(&mut line)?;
    Ok(line)
}

/// Ask for the password on the terminal (stdin), echo off until the line is read: the
/// terminal is restored on every path, SIGINT and SIGTERM included (they end the prompt
/// with 130 or 143 instead of killing this process with echo off).
async fn prompt_password() -> Result<String, Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    // The handlers first: a Ctrl-C typed as soon as the prompt shows must reach them,
    // not the default action, which would end this process with echo still off.
    let (mut int, mut term) =
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(i), Ok(t)) => (i, t),
            (Err(e), _) | (_, Err(e)) => {
                return Err(Failure(
                    format!("cannot handle SIGINT and SIGTERM: {e}"),
                    exit::FAILED,
                ));
            }
        };
    // Echo off before the prompt shows: nothing typed after it is ever echoed.
    let quiet = crate::tty::NoEcho::enter()
        .map_err(|e| Failure(format!("cannot turn the terminal's echo off: {e}"), exit::FAILED))?;
    {
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(b"Password: ").and_then(|()| e.flush());
    }
    // A thread of its own: a blocking read of stdin would hold up the runtime's
    // shutdown after an interrupt.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("password".into())
        .spawn(move || {
            let _ = tx.send(read_line_blocking());
        })
        .map_err(|e| Failure(format!("cannot read the terminal: {e}"), exit::FAILED))?;
    let read = tokio::select! {
        r = rx => r,
        _ = int.recv() => {
            drop(quiet);
            errln!("");
            return Err(Failure(String::new(), 130));
        }
        _ = term.recv() => {
            drop(quiet);
            errln!("");
            return Err(Failure(String::new(), 143));
        }
    };
    drop(quiet);
    match read {
        Ok(Ok(line)) if line.ends_with('\n') => Ok(line),
        Ok(Ok(_)) => Err(Failure("no password given (end of input)".into(), exit::FAILED)),
        Ok(Err(e)) => Err(Failure(format!("cannot read the password: {e}"), exit::FAILED)),
        Err(_) => Err(Failure("cannot read the password".into(), exit::FAILED)),
    }
}

/// `images`: one line per name (an image without one: `<none>`); `--quiet`: ids.
pub(crate) async fn images(g: &Global, quiet: bool, as_json: bool) -> Result<u8, Failure> {
    // Listing creates no home: one that does not exist lists nothing, and says so.
    let Some(store) = read_only_store(g).await? else {
        errln!("boxsock: home {} does not exist (no images)", echo::path(&g.home()?));
        if as_json {
            return json(&serde_json::json!({ "images": [], "bad": [] }));
        }
        return Ok(0);
    };
    let list = store.list_all()?;
    if as_json {
        return json(&serde_json::json!({ "images": list.images, "bad": list.bad }));
    }
    if quiet {
        for i in &list.images {
            outln!("{}", i.id);
        }
    } else {
        outln!(
            "{:<50} {:<14} {:<14} {:>9} {:>6}",
            "NAME",
            "IMAGE ID",
            "PLATFORM",
            "SIZE",
            "LAYERS"
        );
        for i in &list.images {
            let names: Vec<&str> = if i.names.is_empty() {
                vec!["<none>"]
            } else {
                i.names.iter().map(String::as_str).collect()
            };
            for n in names {
                outln!(
                    "{:<50} {:<14} {:<14} {:>9} {:>6}",
                    n,
                    short(&i.id),
                    i.platform,
                    human(i.size()),
                    i.layers.len()
                );
            }
        }
    }
    for bad in &list.bad {
        errln!(
            "boxsock: image {}: stored row is corrupt: {} (remove it with `boxsock rmi -f {}`)",
            bad.id,
            bad.error,
            bad.id
        );
    }
    Ok(0)
}

/// `image inspect REF…`: JSON (an array when several are given).
pub(crate) async fn inspect(g: &Global, refs: Vec<String>) -> Result<u8, Failure> {
    let Some(store) = read_only_store(g).await? else {
        return Err(Failure(
            format!(
                "no image {}: home {} does not exist",
                echo::echo(&refs.join(", ")),
                echo::path(&g.home()?)
            ),
            exit::FAILED,
        ));
    };
    let mut found = Vec::new();
    let mut failed = false;
    for r in &refs {
        match store.inspect(r) {
            Ok(info) => found.push(serde_json::json!({
                "id": info.record.id,
                "names": info.record.names,
                "platform": info.record.platform,
                "added": info.record.added,
                "size": info.record.size(),
                "config_digest": info.record.config,
                "layers": info.record.layers,
                "process": info.config,
                "config": info.oci_config,
            })),
            Err(e) => {
                errln!("boxsock: {e}");
                failed = true;
            }
        }
    }
    match found.len() {
        0 => {}
        1 if refs.len() == 1 => {
            json(&found[0])?;
        }
        _ => {
            json(&found)?;
        }
    }
    Ok(if failed { exit::FAILED } else { 0 })
}

/// `image save REF -o FILE`: an OCI archive, renamed into place once whole.
pub(crate) async fn save(g: &Global, reference: String, out: PathBuf) -> Result<u8, Failure> {
    let Some(store) = read_only_store(g).await? else {
        return Err(Failure(
            format!(
                "no image {}: home {} does not exist",
                echo::echo(&reference),
                echo::path(&g.home()?)
            ),
            exit::FAILED,
        ));
    };
    store.save(&reference, &out).map_err(|e| {
        Failure(
            format!("save {} to {}: {e}", echo::echo(&reference), echo::path(&out)),
            exit::FAILED,
        )
    })?;
    Ok(0)
}

/// `image prune`: blobs and layers no image and no box uses; prints the bytes freed.
pub(crate) async fn prune(g: &Global) -> Result<u8, Failure> {
    let store = store(g).await?;
    let r = store.prune()?;
    outln!(
        "freed {} bytes ({}): {} blob(s), {} layer(s)",
        r.bytes_freed,
        human(r.bytes_freed),
        r.blobs,
        r.layers
    );
    Ok(0)
}

/// `rmi [-f] REF…`: refused while a box is pinned to the image, unless `-f`.
pub(crate) async fn rmi(g: &Global, force: bool, refs: Vec<String>) -> Result<u8, Failure> {
    let store = store(g).await?;
    let mut failed = false;
    for r in &refs {
        match store.remove_with(r, force) {
            Ok(Removed::Untagged(name)) => outln!("Untagged: {name}"),
            Ok(Removed::Deleted(id)) => outln!("Deleted: {id}"),
            Err(e) => {
                errln!("boxsock: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { exit::FAILED } else { 0 })
}
