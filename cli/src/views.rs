//! What the CLI prints about boxes and backends: one shape per thing, shared by the
//! human table and `--json`, and no Rust-only encodings (`{"Ok":…}`) in JSON.

use boxsock::{BoxInfo, BoxState, DoctorReport};
use boxsock::boxsock_runtime::BackendReport;
use serde::Serialize;

/// Whether `ls` shows a box: by default only boxes with a process (starting,
/// running, unhealthy, stopping), like `docker ps`; with `-a` every box.
pub fn listed(state: BoxState, all: bool) -> bool {
    all || state.has_process()
}

/// The rows of `ls`, aligned: each column is as wide as its widest cell.
pub fn table(boxes: &[BoxInfo]) -> Vec<String> {
    let header = ["ID", "NAME", "STATE", "STRATEGY", "BACKEND", "PID"];
    let rows: Vec<[String; 6]> = boxes
        .iter()
        .map(|b| {
            [
                b.id.to_string(),
                b.name.clone().unwrap_or_else(|| "-".into()),
                b.state.to_string(),
                b.strategy.clone(),
                b.backend.clone(),
                b.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let [id, name, state, strategy, backend, pid] = cells;
        format!(
            "{id:<w0$}  {name:<w1$}  {state:<w2$}  {strategy:<w3$}  {backend:<w4$}  {pid:>w5$}",
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
    out.extend(rows.iter().map(|r| line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]])));
    out
}

/// One strategy a backend can or cannot be paired with.
#[derive(Debug, Serialize)]
pub struct Pairing {
    /// The strategy.
    pub strategy: String,
    /// Whether boxes of this backend can use it.
    pub compatible: bool,
    /// Why not, when not.
    pub reason: Option<String>,
}

/// A backend as `backends --json` and `doctor --json` show it.
#[derive(Debug, Serialize)]
pub struct BackendView {
    /// Name.
    pub name: String,
    /// Summary.
    pub summary: String,
    /// Whether it can run boxes here.
    pub available: bool,
    /// Why not, when not.
    pub reason: Option<String>,
    /// Whether `create`/`start` go ahead anyway (a backend option skipped the probe).
    pub launch_available: bool,
    /// `none` (a host process) or `vm`.
    pub isolation: Option<String>,
    /// `path-only` or `path-or-abstract`.
    pub address_needs: Option<String>,
    /// Every registered strategy, paired or not.
    pub strategies: Vec<Pairing>,
}

impl From<&BackendReport> for BackendView {
    fn from(b: &BackendReport) -> Self {
        BackendView {
            name: b.name.clone(),
            summary: b.summary.clone(),
            available: b.available,
            reason: b.reason.clone(),
            launch_available: b.launch_available,
            isolation: b.isolation.clone(),
            address_needs: b.address_needs.clone(),
            strategies: b
                .compatible
                .iter()
                .map(|(s, r)| Pairing { strategy: s.clone(), compatible: r.is_ok(), reason: r.as_ref().err().map(ToString::to_string) })
                .collect(),
        }
    }
}

/// `doctor --json`: the report, its backends in [`BackendView`] shape, and whether
/// the home exists.
pub fn doctor_json(report: &DoctorReport, home_exists: bool) -> Result<serde_json::Value, serde_json::Error> {
    let mut v = serde_json::to_value(report)?;
    if let Some(o) = v.as_object_mut() {
        let backends: Vec<BackendView> = report.backends.iter().map(BackendView::from).collect();
        o.insert("backends".into(), serde_json::to_value(backends)?);
        o.insert("home_exists".into(), serde_json::Value::Bool(home_exists));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_pairing_has_no_result_enum() {
        let b = BackendReport {
            name: "x".into(),
            summary: "s".into(),
            available: true,
            reason: None,
            launch_available: true,
            isolation: None,
            address_needs: None,
            compatible: vec![
                ("a".into(), Ok(())),
                ("b".into(), Err(boxsock::boxsock_runtime::Incompatibility::NeedsPaths { strategy: "b".into(), backend: "x".into() }.into())),
            ],
        };
        let why = b.compatible[1].1.as_ref().unwrap_err().to_string();
        let s = serde_json::to_string(&BackendView::from(&b)).unwrap();
        assert!(!s.contains("\"Ok\"") && !s.contains("\"Err\""), "{s}");
        assert!(s.contains(&format!(r#"{{"strategy":"b","compatible":false,"reason":{}}}"#, serde_json::to_string(&why).unwrap())), "{s}");
    }
}
