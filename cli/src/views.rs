//! What the CLI prints about boxes and backends: one shape per thing, shared by the
//! human table and `--json`, and no Rust-only encodings (`{"Ok":…}`) in JSON.

use boxsock::{BoxInfo, BoxState, DoctorReport};

/// Whether `ls` shows a box: by default only boxes with a process (starting,
/// running, unhealthy, stopping), like `docker ps`; with `-a` every box.
pub fn listed(state: BoxState, all: bool) -> bool {
    all || state.has_process()
}

/// A box's published ports as docker's `ps` shows them:
/// `127.0.0.1:8080->80/tcp, [::1]:53->53/udp`; `-` for none.
pub fn ports(b: &BoxInfo) -> String {
    if b.settings.ports.is_empty() {
        return "-".into();
    }
    b.settings
        .ports
        .iter()
        .map(|p| {
            let host = std::net::SocketAddr::new(p.host_ip, p.host_port);
            format!("{host}->{}/{}", p.box_port, p.protocol)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rows of `ls`, aligned: each column is as wide as its widest cell.
pub fn table(boxes: &[BoxInfo]) -> Vec<String> {
    let header = ["ID", "NAME", "STATE", "STRATEGY", "BACKEND", "PID", "PORTS"];
    let rows: Vec<[String; 7]> = boxes
        .iter()
        .map(|b| {
            [
                b.id.to_string(),
                b.name.clone().unwrap_or_else(|| "-".into()),
                b.state.to_string(),
                b.strategy.clone(),
                b.backend.clone(),
                b.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                ports(b),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 7]| {
        let [id, name, state, strategy, backend, pid, ports] = cells;
        format!(
            "{id:<w0$}  {name:<w1$}  {state:<w2$}  {strategy:<w3$}  {backend:<w4$}  {pid:>w5$}  \
             {ports}",
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3],
            w4 = width[4],
            w5 = width[5]
        )
        .trim_end()
        .to_owned()
    };
    let mut out = vec![line(header)];
    out.extend(rows.iter().map(|r| line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6]])));
    out
}

/// `doctor --json`: the report (its backends as `backends --json` shows them:
/// `BackendReport` serialises its pairings without `{"Ok":…}`) and whether the home
/// exists.
pub fn doctor_json(
    report: &DoctorReport,
    home_exists: bool,
) -> Result<serde_json::Value, serde_json::Error> {
    let mut v = serde_json::to_value(report)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("home_exists".into(), serde_json::Value::Bool(home_exists));
    }
    Ok(v)
}
