//! `bench-report`: turns the last `cargo bench -p boxsock-benches` run into the committed
//! data file (`docs/data/benches.json`) and the generated sections of
//! `docs/performance.md`; `--check` fails when the doc is not what the committed data
//! renders. See [`boxsock_benches::report`].
//!
//! Exit status: 0 done; 1 `--check` found a difference; 2 anything else (no run, samples
//! refused, a file unreadable).

use std::path::{Path, PathBuf};

use boxsock_benches::report::{self, Data, Verdict};
use boxsock_benches::{PAIRED_DIR, TARGETS};
use clap::Parser;

/// Generate docs/performance.md's tables from measured runs, or check them.
#[derive(Debug, Parser)]
#[command(name = "bench-report")]
struct Args {
    /// Compare the doc's generated sections with what the data file renders; exit 1 at
    /// the first difference. Reads nothing under target/.
    #[arg(long, conflicts_with_all = ["render", "from_data", "bench", "criterion"])]
    check: bool,
    /// Print the sections the data file renders; write nothing.
    #[arg(long, conflicts_with_all = ["bench", "criterion", "from_data"])]
    render: bool,
    /// Rewrite the doc's sections from the data file alone (after a change of a target
    /// or of the rendering); reads nothing under target/.
    #[arg(long, conflicts_with_all = ["bench", "criterion"])]
    from_data: bool,
    /// Take only this bench binary's last run (`binding`, `oci`, `rootfs`, …);
    /// repeatable. Default: the last run of each bench binary found.
    #[arg(long, value_name = "NAME")]
    bench: Vec<String>,
    /// Criterion's output directory. Default: `$CARGO_TARGET_DIR/criterion`, else the
    /// workspace's `target/criterion`.
    #[arg(long, value_name = "DIR")]
    criterion: Option<PathBuf>,
    /// The data file.
    #[arg(long, value_name = "FILE", default_value_os_t = report::default_data())]
    data: PathBuf,
    /// The doc.
    #[arg(long, value_name = "FILE", default_value_os_t = report::default_doc())]
    doc: PathBuf,
}

fn criterion_dir(arg: Option<PathBuf>) -> PathBuf {
    arg.or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("criterion")))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion"))
}

fn fail(e: &report::ReportError) -> ! {
    eprintln!("bench-report: {e}");
    std::process::exit(if matches!(e, report::ReportError::Differs(_)) { 1 } else { 2 })
}

fn main() {
    let args = Args::parse();
    if args.check {
        if let Err(e) = report::check_files(&args.doc, &args.data) {
            fail(&e);
        }
        println!("bench-report: {} is what {} renders", args.doc.display(), args.data.display());
        return;
    }
    let mut data = Data::load(&args.data).unwrap_or_else(|e| fail(&e));
    if args.render {
        for (name, text) in report::render(&data) {
            println!("<!-- generated:begin {name} -->\n{text}<!-- generated:end {name} -->\n");
        }
        return;
    }
    if args.from_data {
        let changed = report::write_doc(&args.doc, &data).unwrap_or_else(|e| fail(&e));
        eprintln!(
            "bench-report: {} {}",
            args.doc.display(),
            if changed { "rewritten" } else { "unchanged" }
        );
        return;
    }
    let dir = criterion_dir(args.criterion);
    let collected = report::collect(&dir, &args.bench).unwrap_or_else(|e| fail(&e));
    for r in collected.runs.values() {
        eprintln!(
            "bench-report: run {} ({} benchmarks{}) from {}",
            r.id,
            collected.benchmarks.values().filter(|b| b.run == r.id).count(),
            if r.quiet { "" } else { ", NOT on a quiet machine" },
            dir.join(PAIRED_DIR).display()
        );
    }
    for note in report::merge(&mut data, collected) {
        eprintln!("bench-report: {note}");
    }
    data.save(&args.data).unwrap_or_else(|e| fail(&e));
    let changed = report::write_doc(&args.doc, &data).unwrap_or_else(|e| fail(&e));
    eprintln!(
        "bench-report: wrote {} and {}{}",
        args.data.display(),
        args.doc.display(),
        if changed { "" } else { " (unchanged)" }
    );
    let mut missed = 0;
    for t in TARGETS {
        let (value, limit, v, _) = report::verdict(t, &data);
        let word = match v {
            Verdict::Pass => "PASS",
            Verdict::Miss => {
                missed += 1;
                "MISS"
            }
            Verdict::NotRun => "not run",
        };
        println!("{:<62} {value:>9} {limit:>9} {word}", t.what);
    }
    if missed > 0 {
        eprintln!("bench-report: {missed} target(s) missed; see docs/performance.md");
    }
}
