//! One `cargo test` result per scenario of the real-VM tier. The VM runs once per test
//! process (`boxsock_vm_tests::vm_run`); each test asserts its scenario's recorded
//! result. Scenario scripts: `tests/vm/guest/scenarios.sh`.

use boxsock_vm_tests::assert_scenario;

macro_rules! scenarios {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                assert_scenario($name);
            }
        )*
    };
}

scenarios! {
    vm_short_symlink_lifecycle => "short-symlink",
    vm_inspect_shows_only_short_addresses => "inspect",
    vm_exit_codes_pass_through => "exit-codes",
    vm_stdio_10mb_intact => "stdio-10mb",
    vm_direct_107_boots_108_refused => "direct-limit",
    vm_cleaner_heals_on_next_exec => "cleaner",
    vm_killed_vmm_stops_box_and_reaps_passt => "killed-vmm",
    vm_killed_runtime_mid_start_recovers => "killed-runtime",
    vm_three_boxes_in_one_home => "three-boxes",
    vm_guest_agent_non_default_path_boots => "guest-agent-path",
    vm_network_address_route_resolver_and_host_service => "network",
    vm_landlock_enforced_in_shim => "landlock",
    vm_exec_latency_measured => "exec-latency",
    vm_derived_unixgram_name => "derived-unixgram",
    vm_rootfs_busybox_runs_sh_and_leaves_the_users_dir_unchanged => "rootfs-busybox",
    vm_backend_kit_passes_on_libkrun => "backend-kit",
}

/// The overhead scenario, and the "Real VM" section of docs/performance.md generated
/// from its measurements (written to target/vm/performance-real-vm.md; into the doc with
/// BOXSOCK_UPDATE_DOCS=1).
#[test]
fn vm_overhead_measured() {
    assert_scenario("overhead");
    let boxsock_vm_tests::VmRun::Ran { metrics, vm_wall, inputs, console, .. } = boxsock_vm_tests::vm_run() else { return };
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let section = boxsock_vm_tests::performance_section(metrics, *vm_wall, inputs, &date)
        .unwrap_or_else(|| panic!("the overhead scenario passed without metrics; console {}", console.display()));
    eprintln!("{section}");
    let out = console.with_file_name("performance-real-vm.md");
    std::fs::write(&out, &section).unwrap();
    if std::env::var("BOXSOCK_UPDATE_DOCS").as_deref() == Ok("1") {
        let doc_path = boxsock_vm_tests::workspace_root().join("docs/performance.md");
        let doc = std::fs::read_to_string(&doc_path).unwrap();
        let new = boxsock_vm_tests::replace_section(&doc, &section).expect("docs/performance.md has the real-vm markers");
        std::fs::write(&doc_path, new).unwrap();
    }
}
