//! A private containerd (Debian's containerd 1.6 and its runc shim v2) with `ctr run
//! --runc-binary <path>/boxsock-oci`: `ctr run --rm IMAGE ID CMD` prints the command's
//! output and exits with its status, `ctr task kill` delivers signals (a trapped TERM,
//! then KILL: 137), `ctr task exec --exec-id` runs in the task (output, a write the next
//! exec reads back, an exit code). The image is imported offline from an OCI archive
//! the test builds (engines.rs).
//!
//! Every scenario runs twice in the same run: `boxsock_oci::*` under the runtime under
//! test, and `runc::*` under Debian's runc, the positive control that proves the
//! harness and the scenario on a known-good runtime.

mod common;
#[path = "common/engines.rs"]
#[macro_use]
mod engines;

use std::path::Path;

use engines::{Containerd, code, eventually, stderr, stdout};

under_both_runtimes!(ctr_run_rm_prints_the_output_and_exit_status, task_kill_and_task_exec);

/// `ctr run --rm IMAGE ID CMD`: the command's output, its exit status as ctr's, and
/// nothing left (the id is free again).
fn ctr_run_rm_prints_the_output_and_exit_status(runtime: &Path) {
    let Some(c) = Containerd::new(runtime) else { return };
    let o = c.run(&["--rm"], "one", &["sh", "-c", "echo hi; id -u"]);
    code("ctr run --rm IMAGE one sh -c 'echo hi; id -u'", &o, 0);
    assert_eq!(stdout(&o), "hi\n0\n", "stderr: {}", stderr(&o));
    assert_eq!(c.ok(&["container", "ls", "-q"]), "", "--rm left a container");
    let o = c.run(&["--rm"], "one", &["sh", "-c", "exit 3"]);
    code("ctr run --rm IMAGE one sh -c 'exit 3' (the id again)", &o, 3);
}

/// A detached task: `ctr task exec --exec-id` (output, a write read back by the next
/// exec, an exit code), `ctr task kill` (SIGTERM, trapped: exit 0); a second task
/// `ctr task kill -s SIGKILL`ed: 137.
fn task_kill_and_task_exec(runtime: &Path) {
    let Some(c) = Containerd::new(runtime) else { return };
    let script = "trap 'exit 0' TERM; while :; do sleep 0.1; done";
    let o = c.run(&["-d"], "one", &["sh", "-c", script]);
    code("ctr run -d", &o, 0);
    eventually("task one running", || (c.task_status("one")? == "RUNNING").then_some(()));

    let o = c.exec("one", "e1", &["sh", "-c", "echo exec-$((6*7))"]);
    code("ctr task exec --exec-id e1", &o, 0);
    assert_eq!(stdout(&o), "exec-42\n", "stderr: {}", stderr(&o));
    code("ctr task exec (write)", &c.exec("one", "e2", &["sh", "-c", "echo w > /tmp/f"]), 0);
    let o = c.exec("one", "e3", &["cat", "/tmp/f"]);
    code("ctr task exec (read)", &o, 0);
    assert_eq!(stdout(&o), "w\n");
    code("ctr task exec sh -c 'exit 4'", &c.exec("one", "e4", &["sh", "-c", "exit 4"]), 4);

    c.ok(&["task", "kill", "one"]);
    eventually("task one stopped", || (c.task_status("one")? == "STOPPED").then_some(()));
    let o = c.ctr(&["task", "delete", "one"]);
    code("ctr task delete one", &o, 0);
    assert!(!stderr(&o).contains("exit code"), "SIGTERM was trapped: {}", stderr(&o));
    c.ok(&["container", "delete", "one"]);

    let o = c.run(&["-d"], "two", &["sleep", "1000"]);
    code("ctr run -d (two)", &o, 0);
    eventually("task two running", || (c.task_status("two")? == "RUNNING").then_some(()));
    c.ok(&["task", "kill", "--signal", "SIGKILL", "two"]);
    eventually("task two stopped", || (c.task_status("two")? == "STOPPED").then_some(()));
    let o = c.ctr(&["task", "delete", "two"]);
    code("ctr task delete two", &o, 0);
    assert!(stderr(&o).contains("exit code 137"), "{}", stderr(&o));
    c.ok(&["container", "delete", "two"]);
}
