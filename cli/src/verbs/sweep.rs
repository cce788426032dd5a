//! `sweep`: what the opening already removed, then abandoned `run --rm` boxes and every
//! strategy's leftover bindings.

use crate::args::Global;
use crate::home::Writes;
use crate::{Failure, outln};

/// `sweep`.
pub(crate) async fn sweep(g: &Global) -> Result<u8, Failure> {
    let (rt, opened) = g.open_with_report(Writes::No).await?;
    // What the opening sweep already removed counts as removed by this sweep.
    for (name, r) in &opened.swept {
        if let Ok(rep) = r {
            if !rep.removed.is_empty() {
                outln!("{name}: removed {} at open", rep.removed.len());
                for p in &rep.removed {
                    outln!("  {}", boxsock::boxsock_core::echo::path(p));
                }
            }
        }
    }
    for id in &opened.orphan_dirs_removed {
        outln!("box directory without a row (an interrupted create): removed {id}");
    }
    for id in &opened.orphan_rows_removed {
        outln!("box row without a directory (an interrupted removal): removed {id}");
    }
    // `run --rm` boxes whose client is gone (killed before it could remove
    // them), then every strategy's leftover bindings.
    let abandoned = rt.remove_abandoned().await?;
    outln!("run --rm boxes whose client is gone: removed {}", abandoned.len());
    for id in abandoned {
        outln!("  {id}");
    }
    for (name, r) in rt.sweep().await? {
        match r {
            Ok(rep) => {
                outln!("{name}: removed {}, kept {}", rep.removed.len(), rep.kept);
                for p in rep.removed {
                    outln!("  {}", boxsock::boxsock_core::echo::path(&p));
                }
            }
            Err(e) => outln!("{name}: failed: {e}"),
        }
    }
    Ok(0)
}
