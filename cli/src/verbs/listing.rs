//! Reading boxes without changing the home: `ls`, `inspect`, `logs`.

use std::io::Write;

use boxsock::RuntimeError;

use super::{interrupted, print_socket};
use crate::args::Global;
use crate::{Failure, errln, exit, json, logs, outln, views};

/// `ls`: read-only.
pub(crate) async fn ls(g: &Global, as_json: bool, all: bool, quiet: bool) -> Result<u8, Failure> {
    // Read-only: listing deletes, recovers and creates nothing. A home that does
    // not exist lists nothing, and says so.
    let (boxes, bad) = match g.open_read_only().await? {
        Some(rt) => {
            let l = rt.list()?;
            let mut boxes = Vec::new();
            for b in l.boxes.iter().filter(|b| views::listed(b.state, all)) {
                match rt.inspect(b.id.as_str()) {
                    Ok(i) if views::listed(i.state, all) => boxes.push(i),
                    Ok(_) => {}
                    // Removed meanwhile.
                    Err(RuntimeError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            (boxes, l.bad)
        }
        None => {
            errln!(
                "boxsock: home {} does not exist (no boxes)",
                boxsock::boxsock_core::echo::path(&g.home()?)
            );
            (Vec::new(), Vec::new())
        }
    };
    if as_json {
        return json(&serde_json::json!({ "boxes": boxes, "bad": bad }));
    }
    if quiet {
        for b in &boxes {
            outln!("{}", b.id);
        }
    } else {
        for line in views::table(&boxes) {
            outln!("{line}");
        }
    }
    for bad in &bad {
        errln!(
            "boxsock: box {}: stored row is corrupt: {} (remove it with `boxsock rm -f {}`)",
            bad.id,
            bad.error,
            bad.id
        );
    }
    Ok(0)
}

/// `inspect`: read-only.
pub(crate) async fn inspect(g: &Global, as_json: bool, ids: Vec<String>) -> Result<u8, Failure> {
    let Some(rt) = g.open_read_only().await? else {
        return Err(Failure(
            format!(
                "no box with id or name {}: home {} does not exist",
                boxsock::boxsock_core::echo::echo(&ids.join(", ")),
                boxsock::boxsock_core::echo::path(&g.home()?)
            ),
            exit::FAILED,
        ));
    };
    let mut found = Vec::new();
    let mut failed = false;
    for id in &ids {
        match rt.inspect(id) {
            Ok(i) => found.push(i),
            Err(e) => {
                errln!("boxsock: {e}");
                failed = true;
            }
        }
    }
    if as_json {
        match found.as_slice() {
            [one] if ids.len() == 1 => json(one)?,
            many => json(&many)?,
        };
    } else {
        for (n, i) in found.iter().enumerate() {
            if n > 0 {
                outln!();
            }
            print_info(i)?;
        }
    }
    if failed { Err(Failure(String::new(), exit::FAILED)) } else { Ok(0) }
}

/// `logs`: read-only.
pub(crate) async fn logs(g: &Global, follow: bool, id: String) -> Result<u8, Failure> {
    let Some(rt) = g.open_read_only().await? else {
        return Err(Failure(
            format!(
                "no box with id or name {}: home {} does not exist",
                boxsock::boxsock_core::echo::echo(&id),
                boxsock::boxsock_core::echo::path(&g.home()?)
            ),
            exit::FAILED,
        ));
    };
    let mut out = |b: &[u8]| {
        let mut o = std::io::stdout().lock();
        o.write_all(b).and_then(|()| o.flush())
    };
    match logs::copy(&rt, &id, follow, &mut out, async {
        interrupted().await;
    })
    .await
    {
        Ok(()) => Ok(0),
        Err(logs::LogsError::Stdout(e)) => Err(Failure::stdout(&e)),
        Err(e) => Err(Failure(e.to_string(), exit::FAILED)),
    }
}

/// `inspect` without `--json`.
fn print_info(i: &boxsock::BoxInfo) -> Result<(), Failure> {
    outln!("id:        {}", i.id);
    outln!("name:      {}", i.name.as_deref().unwrap_or("-"));
    outln!("state:     {}", i.state);
    outln!("strategy:  {}", i.strategy);
    outln!("backend:   {}", i.backend);
    match (i.pid, i.start_time) {
        (Some(p), Some(st)) => outln!(
            "process:   pid {p}, start time {st}, {}",
            if i.alive { "alive" } else { "gone" }
        ),
        _ => outln!("process:   -"),
    }
    if let Some(c) = i.exit_code {
        outln!("exit code: {c}");
    }
    if i.process.has_command() {
        // As JSON strings: every argument visible, whatever it holds.
        let argv = serde_json::to_string(&i.process.argv).unwrap_or_default();
        outln!("command:   {argv}");
        if let Some(d) = &i.process.cwd {
            outln!("workdir:   {d}");
        }
    }
    if let Some(u) = &i.process.user {
        outln!("user:      {u}");
    }
    if let Some(d) = &i.disk {
        outln!(
            "disk:      {} of {} allocated ({:.1} %), {}",
            d.allocated,
            d.size,
            d.allocated as f64 * 100.0 / d.size.max(1) as f64,
            boxsock::boxsock_core::echo::path(&d.path)
        );
    }
    for c in &i.companions {
        outln!(
            "companion: pid {} ({}), start time {}, {}",
            c.pid,
            c.command.as_deref().unwrap_or("?"),
            c.start_time,
            if c.alive { "alive" } else { "gone" }
        );
    }
    outln!("cpus:      {}", i.settings.vcpus.map_or("default".into(), |n| n.to_string()));
    outln!("memory:    {}", i.settings.ram_mib.map_or("default".into(), |m| format!("{m} MiB")));
    outln!("ports:     {}", views::ports(i));
    outln!("dir:       {}", i.dir);
    outln!("log:       {}", i.log);
    if let Some(b) = &i.binding {
        outln!("binding:   {b}");
    }
    outln!("sockets:");
    for s in &i.sockets {
        print_socket(s)?;
    }
    Ok(())
}
