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
    vm_overhead_measured => "overhead",
    vm_derived_unixgram_name => "derived-unixgram",
}
