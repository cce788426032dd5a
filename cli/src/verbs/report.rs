//! What this machine and home offer: `strategies`, `backends`, `doctor`.

use super::print_socket;
use crate::args::Global;
use crate::{Failure, exit, json, outln, views};

/// `strategies`.
pub(crate) fn strategies(g: &Global, as_json: bool) -> Result<u8, Failure> {
    let o = g.options()?;
    let rows: Vec<serde_json::Value> = o
        .strategies
        .iter()
        .map(|r| {
            let caps =
                o.strategies.build(r.name, &o.strategy_config).ok().map(|s| s.capabilities());
            serde_json::json!({
                "name": r.name,
                "summary": r.summary,
                "supported_here": caps.as_ref().is_some_and(|c| c.supported_here()),
                "path_addressable": caps.as_ref().map(|c| c.path_addressable),
                "home_length_independent": caps.as_ref().map(|c| c.home_length_independent),
                "peer_credentials": caps.as_ref().map(|c| c.peer_credentials),
                "default": r.name == boxsock::DEFAULT_STRATEGY,
            })
        })
        .collect();
    if as_json {
        return json(&rows);
    }
    for r in &rows {
        outln!("{:<14} {}", r["name"].as_str().unwrap_or(""), r["summary"].as_str().unwrap_or(""));
    }
    Ok(0)
}

/// `backends`.
pub(crate) fn backends(g: &Global, as_json: bool) -> Result<u8, Failure> {
    let report = boxsock::doctor(&g.home()?, &g.options()?);
    if as_json {
        return json(&report.backends);
    }
    for b in &report.backends {
        let avail = if b.available {
            "available".to_string()
        } else {
            format!("unavailable: {}", b.reason.as_deref().unwrap_or("?"))
        };
        outln!("{:<10} {}", b.name, b.summary);
        outln!("{:<10} {avail}", "");
        if !b.available && b.launch_available {
            outln!(
                "{:<10} probe skipped by a backend option: boxes are configured, never booted",
                ""
            );
        }
        if let Some(iso) = &b.isolation {
            outln!("{:<10} isolation: {iso}", "");
        }
    }
    Ok(0)
}

/// `doctor`.
pub(crate) fn doctor(g: &Global, as_json: bool) -> Result<u8, Failure> {
    let home = g.home()?;
    let home_exists = std::fs::symlink_metadata(&home).is_ok();
    let report = boxsock::doctor(&home, &g.options()?);
    if as_json {
        let v = views::doctor_json(&report, home_exists)
            .map_err(|e| Failure(format!("cannot encode JSON: {e}"), exit::FAILED))?;
        return json(&v);
    }
    outln!("home:     {} ({} bytes)", report.home, report.home_bytes);
    if !home_exists {
        outln!("home does not exist: the first writing command (create, run) makes it");
    }
    outln!(
        "platform: {}, sun_path holds {} bytes including the NUL",
        report.platform,
        report.limit
    );
    outln!("worst-case box id: {} ({} bytes)", report.sample_id, report.sample_id.len());
    if let Some(uid) = report.binding_dir_squatted_by {
        outln!(
            "WARNING: the predictable per-user binding directory is held by uid {uid} (squatted)"
        );
    }
    if let Some(d) = &report.binding_dir_fallback {
        outln!("binding directory: {d} (fallback recorded in the home)");
    }
    for f in &report.fallbacks {
        outln!("fallback {} (recorded in {}): {}", f.dir, f.record, f.state);
        for n in &f.notes {
            outln!("  {n}");
        }
    }
    for s in &report.strategies {
        outln!();
        // Addresses that could not be derived at all (not "too long"): say why
        // once, e.g. the abstract strategy's per-home secret in a home that does
        // not exist yet.
        let underivable = s.sockets.iter().all(|x| x.address.is_none()) && !s.sockets.is_empty();
        let verdict = if s.error.is_some() {
            "cannot be built"
        } else if !s.supported_here {
            "not supported on this platform"
        } else if s.all_fit {
            "every address fits"
        } else if underivable {
            "addresses cannot be derived here"
        } else {
            "SOME ADDRESSES DO NOT FIT"
        };
        outln!("strategy {}: {verdict}", s.name);
        if let Some(e) = &s.error {
            outln!("  {e}");
        }
        if let Some(d) = &s.binding_dir {
            outln!("  binding directory: {d}");
        }
        if underivable {
            outln!("  {}", s.sockets[0].error.as_deref().unwrap_or("?"));
            continue;
        }
        for sock in &s.sockets {
            print_socket(sock)?;
        }
    }
    outln!();
    for b in &report.backends {
        let avail = if b.available {
            "available".to_string()
        } else {
            format!("unavailable: {}", b.reason.as_deref().unwrap_or("?"))
        };
        outln!("backend {}: {avail}", b.name);
        if !b.available && b.launch_available {
            outln!(
                "  probe skipped by a backend option (configure_only): create/start go ahead, boxes are configured, never booted"
            );
        }
        if let Some(iso) = &b.isolation {
            outln!("  isolation: {iso}");
        }
        for p in &b.probes {
            outln!("  {}: {} {}", p.name, if p.ok { "ok," } else { "NO," }, p.detail);
        }
        for (s, r) in &b.compatible {
            match r {
                Ok(()) => outln!("  with {s}: ok"),
                Err(e) => outln!("  with {s}: no: {e}"),
            }
        }
    }
    outln!();
    outln!(
        "selected (--strategy {} --backend {}): {}",
        g.strategy,
        g.backend,
        selected_verdict(&report, g)
    );
    Ok(0)
}

/// One sentence on whether new boxes of the selected strategy and backend can be created
/// and started in this home on this machine: compatibility and budget first (they do
/// not depend on the machine), then availability.
fn selected_verdict(report: &boxsock::DoctorReport, g: &Global) -> String {
    let Some(b) = report.backends.iter().find(|b| b.name == g.backend) else {
        return format!("no backend {:?} is registered", g.backend);
    };
    match b.compatible.iter().find(|(s, _)| *s == g.strategy).map(|(_, r)| r) {
        None => format!("strategy {:?} is not registered or cannot be built here", g.strategy),
        Some(Err(e)) => format!("boxes cannot be created: {e}"),
        Some(Ok(())) if !b.launch_available => {
            format!(
                "boxes cannot start here: {}",
                b.reason.as_deref().unwrap_or("the backend is unavailable")
            )
        }
        Some(Ok(())) if !b.available => {
            "boxes are configured but never booted (a backend option skips the probe)".into()
        }
        Some(Ok(())) => "boxes can be created and started".into(),
    }
}
