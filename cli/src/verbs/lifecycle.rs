//! A box's life: `run`, `create`, `start`, `exec`, `stop`, `rm`, and running a command
//! in a box.

use std::io::Write;

use boxsock::boxsock_core::backend::BoxImage;
use boxsock::{BoxProcess, Runtime, RuntimeError};

use super::interrupted;
use crate::args::{BoxArgs, Global, ImageArgs, RunArgs, secs};
use crate::home::Writes;
use crate::{Failure, errln, exit, lifeline, outln, tty, write_out};

/// `run`: create and start a box, run the command in it, then stop or remove it.
pub(crate) async fn run(g: &Global, args: RunArgs) -> Result<u8, Failure> {
    let RunArgs { rm, detach, name, env, interactive, tty, workdir, settings, image, cmd } = args;
    let env: Vec<(String, String)> = env.into_iter().flatten().collect();
    let rt = g.open(Writes::Yes).await.map_err(|f| Failure(f.0, exit::FAILED))?;
    // What runs is stored with the box as its own command (decision 0020). With an
    // image, its config with docker's overrides: the command after `--` replaces Cmd,
    // `-e` its Env, `-w` its WorkingDir, `-u` its User. Its Env is also the box's, so
    // later `exec`s see it (PATH…). Without one, the command with `-e`, `-w` and `-u`.
    let (image, process, box_env) =
        box_process(g, &rt, &settings, image, &env, workdir.clone(), cmd.clone())?;
    let mut opts = g.create_options(name, box_env, false, &settings, image, process);
    // Tie the box to this process: a lifeline (a guardian process told the id
    // before the box exists) removes it as soon as this process dies without
    // removing it (kill -9); the owner recorded with the row lets the next
    // writing command remove it if the lifeline was killed too.
    let guard = match rm {
        true => {
            let owner = boxsock::ProcessIdentity::current().map_err(|e| {
                Failure(format!("cannot read this process's identity: {e}"), exit::FAILED)
            })?;
            let id = boxsock::BoxId::generate();
            let l = lifeline::Lifeline::spawn(g.lifeline_args()?, &id, owner)
                .map_err(|e| Failure(e.to_string(), exit::FAILED))?;
            opts.id = Some(id);
            opts.auto_remove_owner = Some(owner);
            Some(l)
        }
        false => None,
    };
    let b = match rt.create(opts).await {
        Ok(b) => b,
        Err(e) => {
            // A failed create leaves nothing behind.
            if let Some(l) = guard {
                l.disarm();
            }
            return Err(Failure(backend_hint(e, g).0, exit::FAILED));
        }
    };
    let id = b.id.to_string();
    if detach {
        // A failed start leaves the box stopped (`rm` it, or `start` it again).
        rt.start(&id)
            .await
            .map_err(|e| Failure(format!("{e} (box {id} is left stopped)"), exit::FAILED))?;
        outln!("{id}");
        return Ok(0);
    }
    // Ctrl-C or SIGTERM while the box starts stops the start; once the command
    // runs, they are forwarded to it (see `tty`) and it decides its status.
    // Either way a --rm box is removed, any other box stopped, and its id said.
    let exec_started = std::sync::atomic::AtomicBool::new(false);
    let work = async {
        rt.start(&id).await.map_err(exec_failure)?;
        let command = rt.main_command(&id).map_err(exec_failure)?;
        run_command(command, &id, ExecOpts { interactive, tty, started: Some(&exec_started) }).await
    };
    tokio::pin!(work);
    let mut interrupted_by = None;
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            sig = interrupted(), if interrupted_by.is_none() => {
                interrupted_by = Some(sig);
                if !exec_started.load(std::sync::atomic::Ordering::SeqCst) {
                    let code = if sig == "SIGINT" { 128 + 2 } else { 128 + 15 };
                    break Err(Failure(String::new(), code));
                }
            }
        }
    };
    if let Some(sig) = interrupted_by {
        let left = if rm { String::new() } else { format!("; box {id} is left stopped") };
        errln!("boxsock: interrupted by {sig}{left}");
    }
    if rm {
        if let Err(e) = rt.remove(&id, true).await {
            errln!("boxsock: removing box {id}: {e}");
        }
    } else if let Err(e) = rt.stop(&id, None).await {
        // Like an exited container: the box stays, stopped.
        errln!("boxsock: stopping box {id}: {e}");
    }
    // Removed, or its failure said here: the lifeline has nothing left to do
    // (a box this removal could not remove is left to the next writing command).
    if let Some(l) = guard {
        l.disarm();
    }
    Ok(exit_byte(result?))
}

/// `create`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn create(
    g: &Global,
    name: Option<String>,
    env: Vec<Option<(String, String)>>,
    network: bool,
    settings: BoxArgs,
    image: ImageArgs,
    workdir: Option<String>,
    cmd: Vec<String>,
) -> Result<u8, Failure> {
    let env: Vec<(String, String)> = env.into_iter().flatten().collect();
    let rt = g.open(Writes::Yes).await?;
    // `-e` is the box's environment, seen by every `exec` and by its command; with an
    // image, its Env with `-e` applied.
    let (pinned, mut process, box_env) = box_process(g, &rt, &settings, image, &env, workdir, cmd)?;
    if box_env.is_empty() {
        process.env.clear();
    }
    let box_env = if box_env.is_empty() { env } else { box_env };
    let b = rt
        .create(g.create_options(name, box_env, network, &settings, pinned, process))
        .await
        .map_err(|e| backend_hint(e, g))?;
    outln!("{}", b.id);
    Ok(0)
}

/// A new box's image (`create`/`run IMAGE`), resolved in the home's store with
/// docker's overrides applied, and its own process; the box's environment (an image's
/// Env with `-e` applied; empty without an image). Without an image, the process is
/// `cmd` with `env`, `workdir` and `-u`. An image and `--rootfs` are refused together
/// before anything is looked up.
#[allow(clippy::type_complexity)]
fn box_process(
    g: &Global,
    rt: &Runtime,
    settings: &BoxArgs,
    image: ImageArgs,
    env: &[(String, String)],
    workdir: Option<String>,
    cmd: Vec<String>,
) -> Result<(Option<BoxImage>, BoxProcess, Vec<(String, String)>), Failure> {
    let user = image.user.clone().filter(|u| !u.is_empty());
    match image_box(g, rt, settings, image, env, workdir.clone(), cmd.clone())? {
        Some((pinned, p)) => {
            let env: Vec<(String, String)> = p.env.iter().map(|kv| split_kv(kv)).collect();
            let mut process = BoxProcess::new(p.argv);
            // An image without Entrypoint and Cmd gives the box no command, only a user.
            if process.has_command() {
                process.env = env.clone();
                process.cwd = Some(p.cwd).filter(|d| !d.is_empty());
            }
            process.user = Some(p.user).filter(|u| !u.is_empty());
            Ok((Some(pinned), process, env))
        }
        None => {
            let mut process = BoxProcess::new(cmd);
            if process.has_command() {
                process.env = env.to_vec();
                process.cwd = workdir;
            } else if workdir.is_some() {
                return Err(Failure("-w needs a command (after `--`)".into(), exit::FAILED));
            }
            process.user = user;
            Ok((None, process, Vec::new()))
        }
    }
}

/// The image of a new box, resolved in the home's store with docker's overrides
/// applied; `None` without an image.
fn image_box(
    g: &Global,
    rt: &Runtime,
    settings: &BoxArgs,
    image: ImageArgs,
    env: &[(String, String)],
    workdir: Option<String>,
    cmd: Vec<String>,
) -> Result<Option<(BoxImage, boxsock_image::Process)>, Failure> {
    let ImageArgs { image, entrypoint, user } = image;
    let Some(reference) = image else { return Ok(None) };
    if settings.rootfs.is_some() {
        return Err(Failure(
            "a box runs an IMAGE or a --rootfs directory, not both".into(),
            exit::FAILED,
        ));
    }
    let overrides = boxsock_image::Overrides {
        entrypoint: entrypoint.map(|e| if e.is_empty() { Vec::new() } else { vec![e] }),
        cmd,
        env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        working_dir: workdir,
        user,
    };
    let b = g.image_box(rt, &reference, &overrides)?;
    Ok(Some((b.image, b.process)))
}

/// `KEY=VALUE` as a pair (a bare `KEY` from an image's Env is `KEY=`).
fn split_kv(kv: &str) -> (String, String) {
    match kv.split_once('=') {
        Some((k, v)) => (k.to_owned(), v.to_owned()),
        None => (kv.to_owned(), String::new()),
    }
}

/// `start`.
pub(crate) async fn start(
    g: &Global,
    attach: bool,
    interactive: bool,
    ids: Vec<String>,
) -> Result<u8, Failure> {
    if attach {
        return start_attached(g, interactive, ids).await;
    }
    let rt = &g.open_existing(&ids.join(", "), Writes::Yes).await?;
    // A running box is left as it is (and its id printed), like docker.
    each(ids, |id| async move { Ok(rt.start(&id).await?.id.to_string()) }).await
}

/// `start -a`: start the box, run its own command attached (as `run` does), stop the
/// box when it ends and exit with its status, as docker's `start -a` of a container
/// whose main process ends. A box without a command, or one already running (its
/// command runs only at a start), is refused before anything starts.
async fn start_attached(g: &Global, interactive: bool, ids: Vec<String>) -> Result<u8, Failure> {
    let [id] = ids.as_slice() else {
        return Err(Failure(format!("start -a takes one box, not {}", ids.len()), exit::FAILED));
    };
    let rt = g.open_existing(id, Writes::Yes).await.map_err(|f| Failure(f.0, exit::FAILED))?;
    let rec = rt.get(id).map_err(exec_failure)?;
    if !rec.config.process.has_command() {
        return Err(exec_failure(RuntimeError::NoCommand { id: rec.id }));
    }
    let id = rec.id.to_string();
    if rec.state == boxsock::BoxState::Running {
        return Err(Failure(
            format!(
                "box {id} is already running: its command runs when it starts (stop it \
                 first, or run commands with exec)"
            ),
            exit::FAILED,
        ));
    }
    rt.start(&id).await.map_err(exec_failure)?;
    let result = match rt.main_command(&id) {
        Ok(command) => {
            run_command(command, &id, ExecOpts { interactive, tty: false, started: None }).await
        }
        Err(e) => Err(exec_failure(e)),
    };
    // Its command has ended: like an exited container, the box stays, stopped.
    if let Err(e) = rt.stop(&id, None).await {
        errln!("boxsock: stopping box {id}: {e}");
    }
    Ok(exit_byte(result?))
}

/// `exec`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn exec(
    g: &Global,
    env: Vec<Option<(String, String)>>,
    interactive: bool,
    tty: bool,
    workdir: Option<String>,
    user: Option<String>,
    id: String,
    cmd: Vec<String>,
) -> Result<u8, Failure> {
    let env: Vec<(String, String)> = env.into_iter().flatten().collect();
    let rt = g.open_existing(&id, Writes::Yes).await.map_err(|f| Failure(f.0, exit::FAILED))?;
    let Some((program, args)) = cmd.split_first() else {
        return Err(Failure("no command given".into(), exit::FAILED));
    };
    let mut command = rt.command(&id, program.as_str());
    command.args(args.iter().cloned()).envs(env);
    if let Some(dir) = workdir {
        command.current_dir(dir);
    }
    // Without -u, the box's user (stored at create), else the agent's.
    if let Some(u) = user {
        command.user(u);
    }
    let code = run_command(command, &id, ExecOpts { interactive, tty, started: None }).await?;
    Ok(exit_byte(code))
}

/// `stop`.
pub(crate) async fn stop(g: &Global, timeout: f64, ids: Vec<String>) -> Result<u8, Failure> {
    let timeout = secs(timeout, "timeout")?;
    let rt = &g.open_existing(&ids.join(", "), Writes::Yes).await?;
    each(ids, |id| async move { Ok(rt.stop(&id, Some(timeout)).await?.id.to_string()) }).await
}

/// `rm`.
pub(crate) async fn rm(g: &Global, force: bool, ids: Vec<String>) -> Result<u8, Failure> {
    let rt = &g.open_existing(&ids.join(", "), Writes::Yes).await?;
    each(ids, |id| async move { rt.remove(&id, force).await }).await
}

/// Run `f` for each id, printing what it returns (an id) on stdout and each failure
/// on its own stderr line as it happens. Every id is processed; the status is 125 if
/// any failed. A closed stdout does not stop the work asked for.
async fn each<F, Fut>(ids: Vec<String>, mut f: F) -> Result<u8, Failure>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<String, RuntimeError>>,
{
    let mut failed = false;
    let mut printed: Result<(), Failure> = Ok(());
    for id in ids {
        match f(id).await {
            Ok(done) => printed = printed.and_then(|()| write_out(format_args!("{done}"))),
            Err(e) => {
                errln!("boxsock: {e}");
                failed = true;
            }
        }
    }
    printed?;
    if failed { Err(Failure(String::new(), exit::FAILED)) } else { Ok(0) }
}

/// Add a hint when the default backend cannot be used.
fn backend_hint(e: RuntimeError, g: &Global) -> Failure {
    let msg = e.to_string();
    let hint = matches!(
        &e,
        RuntimeError::Registry(_)
            | RuntimeError::Backend(_)
            | RuntimeError::BackendUnavailable { .. }
    ) && g.backend != "host"
        && msg.contains(&g.backend)
        // A setting the backend refuses (too many volumes, a disk size where writes go
        // to a directory…) is not fixed by another backend that honours less.
        && !matches!(
            &e,
            RuntimeError::Backend(
                boxsock_core::backend::BackendError::BadSetting { .. }
                    | boxsock_core::backend::BackendError::Unsupported { .. }
            )
        );
    // Never a silent fallback to less isolation: the user chooses, told what each gives.
    let suggestion = if g.backend == "sandbox" {
        "try --backend host (no isolation)"
    } else {
        "try --backend sandbox (namespaces on the host's kernel, no VM) or --backend host \
         (no isolation)"
    };
    Failure(if hint { format!("{msg}; {suggestion}") } else { msg }, exit::FAILED)
}

/// How `run`/`exec`/`start -a` run the command: `-i`, `-t`; `started` is set once the
/// command runs and signals are forwarded to it.
#[derive(Debug, Clone, Copy)]
struct ExecOpts<'a> {
    interactive: bool,
    tty: bool,
    started: Option<&'a std::sync::atomic::AtomicBool>,
}

/// Run a command in a box, writing its output as it arrives (see `tty` for `-t`,
/// raw mode and the signals forwarded to the command). When stdout's reader goes away
/// (`| head`), the exec session is closed (the child dropped), so the agent kills the
/// command's process group, and this returns the quiet broken-pipe failure.
async fn run_command(
    mut command: boxsock::Command<'_>,
    id: &str,
    attach: ExecOpts<'_>,
) -> Result<i32, Failure> {
    use boxsock::exec::Stdio;
    use tokio::io::AsyncReadExt;
    if attach.tty && attach.interactive && !tty::stdin_is_tty() {
        return Err(Failure(
            "the input device is not a TTY (drop -t, or run from a terminal)".into(),
            exit::FAILED,
        ));
    }
    let program = command.get_program().to_owned();
    let program = program.as_str();
    command
        .stdin(if attach.interactive { Stdio::Inherit } else { Stdio::Null })
        .stdout(Stdio::Piped)
        .stderr(Stdio::Piped);
    if attach.tty {
        let (rows, cols) = tty::window_size().unwrap_or((24, 80));
        command.window_size(rows, cols);
    }
    // Raw mode before the command starts, so no typed byte is echoed locally.
    let raw = match attach.tty && attach.interactive {
        true => Some(tty::RawMode::enter().map_err(|e| {
            Failure(format!("cannot put the terminal in raw mode: {e}"), exit::FAILED)
        })?),
        false => None,
    };
    let mut child = command.spawn().await.map_err(|e| exec_failure_of(e, Some(program)))?;
    let forwarding = tty::forward_signals(child.control(), attach.tty);
    if let Some(started) = attach.started {
        started.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    // A closed stderr drops the command's stderr; the command goes on.
    let copy_err = async {
        let mut buf = vec![0u8; 32 * 1024];
        while let Some(Ok(n @ 1..)) = match err.as_mut() {
            Some(e) => Some(e.read(&mut buf).await),
            None => None,
        } {
            let _ = std::io::stderr().lock().write_all(&buf[..n]);
        }
        std::io::Result::Ok(())
    };
    let copy_out = async {
        let mut buf = vec![0u8; 32 * 1024];
        while let Some(Ok(n @ 1..)) = match out.as_mut() {
            Some(o) => Some(o.read(&mut buf).await),
            None => None,
        } {
            let mut o = std::io::stdout().lock();
            o.write_all(&buf[..n]).and_then(|()| o.flush())?;
        }
        std::io::Result::Ok(())
    };
    // A closed stdout ends both copies at once (the command may go on writing to
    // stderr).
    let copied = tokio::try_join!(copy_out, copy_err);
    let result = match copied {
        Err(e) => {
            tracing::debug!(box_id = id, error = %e, "stdout closed; ended the exec session");
            Err(Failure::stdout(&e))
        }
        Ok(((), ())) => child
            .wait()
            .await
            .map(|s| s.shell_code())
            .map_err(|e| exec_failure_of(e, Some(program))),
    };
    forwarding.abort();
    drop(child);
    drop(raw);
    result
}

/// A failed `run`/`exec`: 127 when the command was not found, 126 when it cannot be
/// executed (as a shell does), else 125; see [`exit::exec_failure`].
fn exec_failure(e: RuntimeError) -> Failure {
    exec_failure_of(e, None)
}

fn exec_failure_of(e: RuntimeError, argv0: Option<&str>) -> Failure {
    let (msg, code) = exit::exec_failure(&e, argv0);
    Failure(msg, code)
}

fn exit_byte(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(255)
}
