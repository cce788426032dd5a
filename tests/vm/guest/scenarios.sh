#!/bin/sh
# The scenarios of the real-VM tier (tests/vm), run by /init inside the TCG host against
# the real boxsock CLI and real libkrun guests. Each prints one line
#   @@VM result <name> pass|fail|skip <reason>
# (plus "@@VM log <name> | <line>" lines with its output on failure); tests/vm turns
# each into its own `cargo test` result. A skip (exit 77) is a failure when the tier is
# required (BOXSOCK_VM_REQUIRED=1, CI). Measurements: "@@VM metric <name> <value>", and
# paired ones, "@@VM pair <name> <i> subject-first|floor-first <subject_ms> <floor_ms>",
# whose per-pair ratios tests/vm asserts (median against a limit).
#
# Also usable on a real KVM host (scripts/krun-boot-test.sh): set BOXSOCK_BIN_DIR,
# LIBKRUNFW_DIR, BUSYBOX and VM_WORK; without VM_POWEROFF it just returns.
BIN="${BOXSOCK_BIN_DIR:-/opt/boxsock/bin}"
KRUNFW="${LIBKRUNFW_DIR:-/opt/krunfw}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"
WORK="${VM_WORK:-/work}"
WWW="${VM_WWW:-/srv/www}"   # served by the host: hello.txt on port 8080, big.bin on 8081
ONLY="${VM_ONLY:-}"
# Scenarios that already reported in an earlier boot of a host that froze (tests/vm).
SKIP="${VM_SKIP:-}"
export LD_LIBRARY_PATH="$KRUNFW${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$BIN:$PATH"
READY_TIMEOUT=180
UIDN="$(id -u)"
SC_TIMEOUT="${VM_SC_TIMEOUT:-300}"
mkdir -p "$WORK"

# A home of at least 300 bytes.
deep_home() {
    h="$WORK/$1"
    while [ ${#h} -lt 300 ]; do h="$h/deeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeep"; done
    mkdir -p "$h" && echo "$h"
}
HOME_="$(deep_home home)"

now_ms() { read -r up _ < /proc/uptime; s=${up%.*}; c=${up#*.}; echo $((s * 1000 + ${c#0} * 10)); }

# bs [--home H] ARGS...: the CLI with the libkrun backend for this machine.
bs() {
    h="$HOME_"
    if [ "$1" = "--home" ]; then h="$2"; shift 2; fi
    set -- --home "$h" --helper-dir "$BIN" --backend libkrun \
        --backend-option "read_only=$KRUNFW" --backend-option "agent=$BIN/boxsock-agent" \
        $BS_EXTRA --ready-timeout "$READY_TIMEOUT" "$@"
    # BS_EXEC=1: replace the calling (sub)shell, so `BS_EXEC=1 bs … &` makes $! boxsock.
    if [ -n "$BS_EXEC" ]; then exec boxsock "$@"; fi
    boxsock "$@"
}
BS_EXTRA=""

# add_busybox HOME ID: /bin/busybox and /bin/sh in the box's guest root.
add_busybox() {
    r="$1/boxes/$2/rootfs"
    mkdir -p "$r/bin" && cp "$BUSYBOX" "$r/bin/busybox" && ln -sf busybox "$r/bin/sh"
}

fail() { echo "FAIL: $*"; exit 1; }
# box_fail HOME ID MSG: fail, after printing the box's logs (guest console, passt).
box_fail() {
    for l in "$1/boxes/$2/logs/"*; do echo "--- $l"; tail -30 "$l"; done
    fail "$3"
}
json_field() { sed -n "s/^  \"$1\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p"; }
alive() { [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
shims() { for p in $(pidof boxsock-krun-shim); do alive "$p" && echo "$p"; done; }
passts() { for p in $(pidof passt); do alive "$p" && echo "$p"; done; }

# create_started [bs args]: create a box (extra args to create), add busybox, start it;
# prints the id. Records the start time as metric start_ms_<n>.
create_started() {
    id="$(bs create "$@")" || fail "create $* failed"
    add_busybox "$HOME_" "$id" || fail "cannot add busybox to $id"
    t0=$(now_ms)
    bs start "$id" >/dev/null || { bs inspect "$id"; tail -20 "$HOME_/boxes/$id/logs/box.log"; fail "start $id failed"; }
    echo "@@VM metric start_ms $(( $(now_ms) - t0 ))" >&2
    echo "$id"
}

# guest_crash_line FILE...: the first line in which a libkrun guest's kernel reports that
# it crashed (the headline of an oops or a panic), from the box logs (guest consoles), or
# in which boxsock said so (a start's error: the box and its log may be gone since).
guest_crash_line() {
    grep -hE '^\[ *[0-9]+\.[0-9]+\] (Kernel panic - not syncing|BUG: |Oops|general protection fault|kernel BUG at)|The kernel in the box crashed: ' \
        "$@" 2>/dev/null | head -1
}
# A scenario that failed while a guest's kernel crashed is run once more (at most
# GUEST_CRASH_RERUNS times per boot of this host): the nested, TCG-emulated SVM under these
# guests has been seen to corrupt a guest's memory while it boots (docs/reliability.md).
# Any other failure stands. "@@VM guest-crash <name> <line>" records each rerun.
GUEST_CRASH_RERUNS=3
crash_reruns=0
# VM_INJECT_CRASH=<name> (tests/vm: BOXSOCK_VM_INJECT_GUEST_CRASH): the first attempt of
# that scenario is replaced by a box whose guest kernel is made to panic (libkrunfw has no
# sysrq: the box fills a tmpfs with panic_on_oom set), to show the rerun working.
INJECT_CRASH="${VM_INJECT_CRASH:-}"
inject_crash() {
    id="$(create_started)" || exit 1
    BB=/bin/busybox
    bs exec "$id" -- $BB sh -c "$BB mkdir -p /proc /fill && $BB mount -t proc proc /proc \
        && echo 1 > /proc/sys/vm/panic_on_oom && $BB mount -t tmpfs -o size=100% tmpfs /fill \
        && $BB dd if=/dev/zero of=/fill/f bs=1M" >/dev/null 2>&1
    t0=$(now_ms)
    while [ "$(bs inspect "$id" --json | json_field state)" = running ]; do
        [ $(( $(now_ms) - t0 )) -lt 60000 ] || break
        sleep 0.5
    done
    tail -5 "$HOME_/boxes/$id/logs/box.log"
    fail "injected: the guest kernel of $id was made to panic"
}

run() {
    name="$1"; shift
    if [ -n "$ONLY" ] && ! echo ",$ONLY," | grep -q ",$name,"; then return; fi
    if [ -n "$SKIP" ] && echo ",$SKIP," | grep -q ",$name,"; then return; fi
    attempt=1
    while :; do
        echo "@@VM begin $name uptime=$(cut -d' ' -f1 /proc/uptime)"
        log="/tmp/scenario-$name.log"
        marker="/tmp/scenario-$name.began"
        : > "$marker"
        t0=$(now_ms)
        if [ $attempt -eq 1 ] && [ "$name" = "$INJECT_CRASH" ]; then
            ( inject_crash ) > "$log" 2>&1 &
        else
            ( "$@" ) > "$log" 2>&1 &
        fi
        spid=$!
        ( sleep "$SC_TIMEOUT"; kill -9 "$spid" 2>/dev/null && echo "FAIL: timed out after ${SC_TIMEOUT}s" >> "$log" ) &
        wpid=$!
        wait "$spid"
        rc=$?
        kill "$wpid" 2>/dev/null
        ms=$(( $(now_ms) - t0 ))
        if [ $rc -ne 0 ] && [ $rc -ne 77 ] && [ $attempt -eq 1 ] && [ $crash_reruns -lt $GUEST_CRASH_RERUNS ]; then
            crash="$(guest_crash_line $(find "$WORK" -path '*/logs/*' -type f -newer "$marker" 2>/dev/null) "$log")"
            if [ -n "$crash" ]; then
                echo "@@VM guest-crash $name $crash"
                echo "@@VM crash-log $name | $(grep '^FAIL:' "$log" | tail -1)"
                cleanup
                crash_reruns=$((crash_reruns + 1))
                attempt=2
                continue
            fi
        fi
        break
    done
    if [ $rc -eq 0 ]; then
        echo "@@VM result $name pass ${ms}ms"
    elif [ $rc -eq 77 ]; then
        echo "@@VM result $name skip $(tail -1 "$log")"
    else
        echo "@@VM result $name fail ${ms}ms: $(grep '^FAIL:' "$log" | tail -1)"
        tail -40 "$log" | while IFS= read -r l; do echo "@@VM log $name | $l"; done
    fi
    grep -E '^@@VM (metric|pair) ' "$log"
    # Whatever a failed scenario left: remove it, so the next one starts clean.
    [ $rc -eq 0 ] || cleanup
}

box_ids() { boxsock --home "$1" ls -a -q 2>/dev/null; }
cleanup() {
    for h in "$HOME_" "$WORK"/d10*; do
        [ -d "$h/boxes" ] || continue
        for b in $(box_ids "$h"); do bs --home "$h" rm -f "$b" >/dev/null 2>&1; done
    done
}

# --- scenarios -------------------------------------------------------------------------------

sc_short_symlink() {
    [ ${#HOME_} -ge 300 ] || fail "home is ${#HOME_} bytes"
    echo "home: ${#HOME_} bytes"
    id="$(create_started)" || exit 1
    out="$(bs exec "$id" -- /bin/sh -c 'echo hello-from-guest')" || fail "exec 1 failed: $out"
    [ "$out" = "hello-from-guest" ] || fail "exec 1 printed '$out'"
    bs stop "$id" || fail "stop failed"
    [ "$(bs inspect "$id" --json | json_field state)" = stopped ] || fail "not stopped after stop"
    bs start "$id" || fail "second start failed"
    out="$(bs exec "$id" -- /bin/busybox echo again)" || fail "exec 2 failed"
    [ "$out" = "again" ] || fail "exec 2 printed '$out'"
    pid="$(bs inspect "$id" --json | json_field pid)"
    bs rm -f "$id" || fail "rm failed"
    [ -e "/tmp/boxsock-$UIDN/$id" ] && fail "link /tmp/boxsock-$UIDN/$id left after rm"
    [ -d "$HOME_/boxes/$id" ] && fail "box dir left after rm"
    alive "$pid" && fail "shim $pid alive after rm"
    true
}

sc_direct_limit() {
    # direct binds <home>/boxes/<12-char id>/sockets/agent.sock: home + 38 bytes.
    pad() { h="$WORK/$1"; while [ ${#h} -lt "$2" ]; do h="${h}x"; done; mkdir -p "$h"; echo "$h"; }
    h107="$(pad d107 69)"
    h108="$(pad d108 70)"
    if out="$(BS_EXTRA="" bs --home "$h108" --strategy direct create 2>&1)"; then fail "create under a 108-byte agent path succeeded: $out"; fi
    echo "refusal: $out"
    echo "$out" | grep -q '"agent"\|agent' || fail "refusal does not name the socket: $out"
    echo "$out" | grep -q '108' || fail "refusal does not give the length 108: $out"
    echo "$out" | grep -qi 'limit' || fail "refusal does not name the limit: $out"
    [ -z "$(ls "$h108/boxes" 2>/dev/null)" ] || fail "refused create left $(ls "$h108/boxes")"
    id="$(bs --home "$h107" --strategy direct create)" || fail "create under a 107-byte agent path failed"
    addr="$(bs --home "$h107" inspect "$id" --json | sed -n 's/.*"address": "\(.*agent.sock\)".*/\1/p')"
    echo "agent address (${#addr} bytes): $addr"
    [ ${#addr} -eq 107 ] || fail "agent address is ${#addr} bytes, wanted 107: $addr"
    add_busybox "$h107" "$id"
    bs --home "$h107" start "$id" || { tail -20 "$h107/boxes/$id/logs/box.log"; fail "start with a 107-byte agent path failed"; }
    out="$(bs --home "$h107" exec "$id" -- /bin/busybox echo direct-107)" || fail "exec failed"
    [ "$out" = direct-107 ] || fail "exec printed '$out'"
    bs --home "$h107" rm -f "$id" || fail "rm failed"
}

sc_guest_agent_path() {
    id="$(BS_EXTRA="--backend-option guest_agent=/opt/agent/bin/boxsock-agent" bs create)" || fail "create failed"
    base="$HOME_/guest-base/$(cat "$HOME_/boxes/$id/guest-base")"
    [ -x "$base/opt/agent/bin/boxsock-agent" ] || fail "no agent at /opt/agent/bin/boxsock-agent in the guest base: $(ls -R "$base" | head -20)"
    add_busybox "$HOME_" "$id"
    BS_EXTRA="--backend-option guest_agent=/opt/agent/bin/boxsock-agent" bs start "$id" || { tail -20 "$HOME_/boxes/$id/logs/box.log"; fail "start failed"; }
    out="$(bs exec "$id" -- /bin/busybox echo custom-path)" || fail "exec failed"
    [ "$out" = custom-path ] || fail "exec printed '$out'"
    bs rm -f "$id" || fail "rm failed"
}

sc_killed_runtime() {
    id="$(bs create)" || fail "create failed"
    add_busybox "$HOME_" "$id"
    BS_EXEC=1 bs start "$id" > /tmp/kr-start.log 2>&1 &
    cli=$!
    # Mid-start: the shim is up (its pid recorded) and the guest is booting.
    t0=$(now_ms); shim=""
    while [ -z "$shim" ]; do
        [ $(( $(now_ms) - t0 )) -lt 60000 ] || fail "no shim recorded within 60 s; start said: $(cat /tmp/kr-start.log)"
        alive "$cli" || fail "start ended before it was killed: $(cat /tmp/kr-start.log)"
        shim="$(bs inspect "$id" --json 2>/dev/null | json_field pid | grep -v null)"
        sleep 0.2
    done
    sleep 1
    kill -9 $cli; wait $cli 2>/dev/null
    echo "runtime $cli killed mid-start; shim $shim"
    state="$(bs inspect "$id" --json | json_field state)" || fail "inspect after the kill failed"
    pid="$(bs inspect "$id" --json | json_field pid)"
    echo "after the kill: state=$state pid=$pid"
    case "$state" in
        running|starting) [ "$pid" = "$shim" ] && alive "$pid" || fail "state $state but pid '$pid' is not the live shim $shim" ;;
        stopped|created) alive "$shim" && fail "state $state but shim $shim is alive" ;;
        *) fail "state $state" ;;
    esac
    bs stop "$id" || fail "stop after the kill failed"
    [ "$(bs inspect "$id" --json | json_field state)" = stopped ] || fail "not stopped after stop"
    alive "$shim" && fail "shim $shim alive after stop"
    bs start "$id" || fail "restart after the kill failed"
    [ "$(bs exec "$id" -- /bin/busybox echo ok)" = ok ] || fail "exec after restart failed"
    bs rm -f "$id" || fail "rm failed"
    [ -z "$(shims)" ] || fail "shims left: $(shims)"
}

sc_three_boxes() {
    ids=""
    for n in 1 2 3; do ids="$ids $(bs create)" || fail "create $n failed"; done
    for id in $ids; do add_busybox "$HOME_" "$id"; done
    pids=""
    for id in $ids; do bs start "$id" > "/tmp/start-$id.log" 2>&1 & pids="$pids $!"; done
    for p in $pids; do wait "$p" || fail "a concurrent start failed: $(cat /tmp/start-*.log)"; done
    for id in $ids; do
        out="$(bs exec "$id" -- /bin/busybox echo "box-$id")" || fail "exec in $id failed"
        [ "$out" = "box-$id" ] || fail "exec in $id printed '$out'"
    done
    [ "$(shims | wc -l)" -eq 3 ] || fail "expected 3 shims, found: $(shims)"
    for id in $ids; do bs rm -f "$id" || fail "rm $id failed"; done
    [ -z "$(shims)" ] || fail "shims left: $(shims)"
}

MAIN=""
main_box() {
    [ -n "$MAIN" ] && return
    MAIN="$(box_ids "$HOME_" | head -1)"
    [ -n "$MAIN" ] && return
    MAIN="$(create_started)" || fail "cannot start the shared box"
}

sc_inspect() {
    main_box
    bs inspect "$MAIN"
    n=0
    for a in $(bs inspect "$MAIN" --json | sed -n 's/.*"address": "\(.*\)".*/\1/p'); do
        n=$((n + 1))
        case "$a" in "/tmp/boxsock-$UIDN/$MAIN/"*) ;; *) fail "address $a is not under /tmp/boxsock-$UIDN/$MAIN" ;; esac
        [ ${#a} -le 60 ] || fail "address $a is ${#a} bytes"
        case "$a" in *agent.sock) [ -S "$a" ] || fail "agent address $a is not a live socket" ;; esac
    done
    [ $n -ge 2 ] || fail "inspect shows $n addresses"
    bs inspect "$MAIN" | grep -q "$HOME_/boxes/$MAIN/sockets" && fail "inspect shows a long socket path"
    true
}

sc_exit_codes() {
    main_box
    for code in 0 1 7 42 255; do
        bs exec "$MAIN" -- /bin/sh -c "exit $code"; got=$?
        [ "$got" -eq "$code" ] || fail "exit $code came back as $got"
    done
    bs exec "$MAIN" -- /no/such/program; got=$?
    [ "$got" -ne 0 ] || fail "a missing program exited 0"
    echo "missing program: exit $got"
}

sc_stdio_10mb() {
    main_box
    head -c 10485760 /dev/urandom > /tmp/in.bin
    t0=$(now_ms)
    bs exec -i "$MAIN" -- /bin/busybox cat < /tmp/in.bin > /tmp/out.bin || fail "exec cat failed"
    echo "@@VM metric stdio_10mb_ms $(( $(now_ms) - t0 ))"
    [ "$(wc -c < /tmp/out.bin)" -eq 10485760 ] || fail "got $(wc -c < /tmp/out.bin) bytes back"
    cmp /tmp/in.bin /tmp/out.bin || fail "the 10 MB came back different"
    rm -f /tmp/in.bin /tmp/out.bin
}

sc_cleaner() {
    main_box
    rm -rf /tmp/boxsock-$UIDN
    [ -e "/tmp/boxsock-$UIDN/$MAIN" ] && fail "link survived the cleaner"
    out="$(bs exec "$MAIN" -- /bin/busybox echo healed)" || fail "exec after the cleaner failed: $out"
    [ "$out" = healed ] || fail "exec printed '$out'"
    [ -L "/tmp/boxsock-$UIDN/$MAIN" ] || fail "link not healed"
    [ "$(stat -c %a /tmp/boxsock-$UIDN)" = 700 ] || fail "per-uid dir mode $(stat -c %a /tmp/boxsock-$UIDN)"
}

# `boxsock exec … true` (subject) against its floor, one raw agent round trip with the
# same command (`vm-bare-launch exec`: a fresh process, connect, exec, exit status; no
# store, no strategy, no CLI). A pair is three of each, interleaved (S F S F S F, or
# F S F S F S every other pair), and records each side's fastest: an exec is short
# beside a burst of load from the machine's other work, which only ever adds time.
EXEC_PAIRS=12
EXEC_REPS=3
sc_exec_latency() {
    main_box
    agent="/tmp/boxsock-$UIDN/$MAIN/agent.sock"
    bs exec "$MAIN" -- /bin/busybox true || fail "warm-up exec failed"
    i=1
    while [ $i -le $EXEC_PAIRS ]; do
        if [ $((i % 2)) -eq 1 ]; then order=subject-first; else order=floor-first; fi
        rt=""; bare=""; k=0
        while [ $k -lt $EXEC_REPS ]; do
            for what in $( [ $order = subject-first ] && echo "subject floor" || echo "floor subject" ); do
                t0=$(now_ms)
                if [ $what = subject ]; then
                    bs exec "$MAIN" -- /bin/busybox true || fail "exec $i failed"
                    ms=$(( $(now_ms) - t0 ))
                    [ -z "$rt" ] || [ $ms -lt $rt ] && rt=$ms
                else
                    vm-bare-launch exec "$agent" || fail "raw agent exec $i failed"
                    ms=$(( $(now_ms) - t0 ))
                    [ -z "$bare" ] || [ $ms -lt $bare ] && bare=$ms
                fi
            done
            k=$((k + 1))
        done
        echo "@@VM pair exec_true $i $order $rt $bare"
        i=$((i + 1))
    done
}

sc_network() {
    id="$(create_started --network)" || exit 1
    bs inspect "$id"
    net="$(bs inspect "$id" --json | sed -n 's/.*"address": "\(.*net.sock\)".*/\1/p')"
    [ "$net" = "/tmp/boxsock-$UIDN/$id/net.sock" ] || fail "net address is '$net'"
    addr="$(bs exec "$id" -- /bin/busybox ip -4 addr show dev eth0)"
    echo "$addr"
    echo "$addr" | grep -q 'inet ' || box_fail "$HOME_" "$id" "eth0 has no IPv4 address: $(bs exec "$id" -- /bin/busybox ip addr)"
    route="$(bs exec "$id" -- /bin/busybox ip -4 route)"
    echo "$route"
    echo "$route" | grep -q '^default via' || fail "no default route: $route"
    resolv="$(bs exec "$id" -- /bin/busybox cat /etc/resolv.conf)"
    echo "$resolv"
    echo "$resolv" | grep -q '^nameserver ' || fail "no resolver: $resolv"
    gw="$(echo "$route" | sed -n 's/^default via \([0-9.]*\).*/\1/p')"
    # The services send a file and close; nc sends nothing (its stdin stays open, empty,
    # for 3 s) and is bounded by `timeout`, as it has been seen to outlive the close.
    # (The static busybox's wget crashes in the guest root: glibc NSS from a static
    # binary beside the agent's dynamic libc.)
    get() { bs exec "$id" -- /bin/sh -c "/bin/busybox sleep 3 | /bin/busybox timeout 20 /bin/busybox nc $gw $1 | /bin/busybox md5sum"; }
    bs exec "$id" -- /bin/busybox ip link show dev eth0
    got="$(get 8080 2>&1)"
    [ "$got" = "$(md5sum < "$WWW/hello.txt")" ] || box_fail "$HOME_" "$id" "hello.txt from the host service at $gw:8080 came back as '$got'"
    echo "hello.txt: ok"
    # Far more than one segment: the MTU the guest chose must be receivable.
    got="$(get 8081 2>&1)"
    [ "$got" = "$(md5sum < "$WWW/big.bin")" ] || box_fail "$HOME_" "$id" "256 KB from the host service at $gw:8081 came back as '$got'"
    bs rm -f "$id" || fail "rm failed"
    [ -z "$(passts)" ] || fail "passt left after rm: $(passts)"
}

sc_killed_vmm() {
    id="$(create_started --network)" || exit 1
    j="$(bs inspect "$id" --json)"
    shim="$(echo "$j" | json_field pid)"
    passt="$(echo "$j" | sed -n '/"companions"/,$p' | sed -n 's/.*"pid": \([0-9]*\).*/\1/p' | head -1)"
    echo "shim $shim passt $passt"
    [ -n "$passt" ] && alive "$passt" || fail "no live passt companion recorded: $j"
    kill -9 "$shim"
    t0=$(now_ms)
    while [ "$(bs inspect "$id" --json | json_field state)" != stopped ]; do
        [ $(( $(now_ms) - t0 )) -lt 5000 ] || fail "not stopped 5 s after the shim was killed"
        sleep 0.2
    done
    echo "stopped after $(( $(now_ms) - t0 )) ms"
    i=0; while alive "$passt" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    alive "$passt" && fail "passt $passt alive after the box stopped"
    # inspect is read-only: it showed what it observed. The next writing command records
    # the stop and removes what the dead shim left.
    bs sweep >/dev/null || fail "sweep failed"
    ls "$HOME_/boxes/$id/sockets/" | grep -q . && fail "socket files left in a stopped box: $(ls "$HOME_/boxes/$id/sockets/")"
    bs rm "$id" || fail "rm failed"
    [ -e "/tmp/boxsock-$UIDN/$id" ] && fail "link left after rm"
    [ -d "$HOME_/boxes/$id" ] && fail "box dir left after rm"
    [ -z "$(shims)$(passts)" ] || fail "processes left: shims $(shims) passt $(passts)"
    true
}

sc_landlock() {
    # Outside every grant of the jail (the grants: system dirs read-only, the box disk,
    # the socket directories), writable by this user without a jail.
    probe="$WORK/jail-probe-$$"
    id="$(BS_EXTRA="--backend-option jail_probe=$probe" bs create)" || fail "create failed"
    add_busybox "$HOME_" "$id"
    BS_EXTRA="--backend-option jail_probe=$probe" bs start "$id" || { tail -20 "$HOME_/boxes/$id/logs/box.log"; fail "start with the jail on failed"; }
    grep 'jail probe' "$HOME_/boxes/$id/logs/box.log"
    grep -q "jail probe: writing \"$probe\" was denied" "$HOME_/boxes/$id/logs/box.log" || box_fail "$HOME_" "$id" "the shim's log has no denied probe: $(grep 'jail' "$HOME_/boxes/$id/logs/box.log")"
    [ -e "$probe" ] && fail "$probe exists: the jail let the shim write outside its grants"
    [ "$(bs exec "$id" -- /bin/busybox echo jailed)" = jailed ] || fail "exec in the jailed box failed"
    bs stop "$id" || fail "stop failed"
    # The same probe with the jail off succeeds: the probe can tell.
    BS_EXTRA="--backend-option jail_probe=$probe --backend-option jail=off" bs start "$id" || fail "start with jail=off failed"
    grep -q "jail probe: writing \"$probe\" succeeded" "$HOME_/boxes/$id/logs/box.log" || fail "the probe did not succeed with jail=off"
    rm -f "$probe"
    bs rm -f "$id" || fail "rm failed"
}

# Start→ready through the runtime (subject) against the same guest launched by the shim
# alone (floor: vm-bare-launch replays the spec the runtime gave the shim and returns at
# the same readiness frame, leaving the shim running as `boxsock start` leaves the box),
# both timed here from spawn to exit, in pairs that alternate which goes first, so neither always
# follows the other's teardown. tests/vm asserts the median of the per-pair ratios.
START_PAIRS=10
sc_overhead() {
    id="$(bs create)" || fail "create failed"
    add_busybox "$HOME_" "$id"
    # The first start records the spec the bare launches replay.
    bs start "$id" >/dev/null && bs stop "$id" >/dev/null || fail "the first start failed"
    i=1
    while [ $i -le $START_PAIRS ]; do
        if [ $((i % 2)) -eq 1 ]; then order=subject-first; else order=floor-first; fi
        for what in $( [ $order = subject-first ] && echo "subject floor" || echo "floor subject" ); do
            if [ $what = subject ]; then
                t0=$(now_ms)
                bs start "$id" >/dev/null || fail "start $i failed"
                rt=$(( $(now_ms) - t0 ))
                bs stop "$id" >/dev/null || fail "stop $i failed"
            else
                spec="$HOME_/boxes/$id/shim-spec.json"
                t0=$(now_ms)
                out="$(vm-bare-launch start "$spec" "$BIN/boxsock-krun-shim")" \
                    || box_fail "$HOME_" "$id" "bare launch $i failed: $out"
                bare=$(( $(now_ms) - t0 ))
                # Its own clock (bind to readiness, without its process start), for
                # the record.
                echo "@@VM metric start_bare_internal_ms ${out#* }"
                vm-bare-launch kill "${out%% *}" "$spec" || fail "killing the bare shim ${out%% *} failed"
            fi
        done
        echo "@@VM pair start_ready $i $order $rt $bare"
        i=$((i + 1))
    done
    # For the record, not asserted: what a CLI process costs on its own (`inspect`:
    # start, store, one record, exit) and what the floor's process costs on its own.
    for k in 1 2 3 4 5; do
        t0=$(now_ms); bs inspect "$id" >/dev/null || fail "inspect failed"
        echo "@@VM metric cli_inspect_ms $(( $(now_ms) - t0 ))"
        t0=$(now_ms); vm-bare-launch >/dev/null 2>&1
        echo "@@VM metric bare_process_ms $(( $(now_ms) - t0 ))"
    done
    bs rm -f "$id" || fail "rm failed"
}

echo "@@VM scenarios home=${#HOME_} kvm=$([ -c /dev/kvm ] && echo yes || echo no)"
run short-symlink sc_short_symlink
run direct-limit sc_direct_limit
run guest-agent-path sc_guest_agent_path
run killed-runtime sc_killed_runtime
run three-boxes sc_three_boxes
run inspect sc_inspect
run exit-codes sc_exit_codes
run stdio-10mb sc_stdio_10mb
run cleaner sc_cleaner
run exec-latency sc_exec_latency
cleanup
run network sc_network
run killed-vmm sc_killed_vmm
run landlock sc_landlock
# Twenty-one libkrun boots (about 170 s in CI's TCG host): a longer bound.
sc_timeout_saved="$SC_TIMEOUT"; SC_TIMEOUT=$((SC_TIMEOUT * 3))
run overhead sc_overhead
SC_TIMEOUT="$sc_timeout_saved"
cleanup

# A box from a static-busybox root (`create --rootfs`). The guest sees the
# user's directory read-only under the box's own disk (decisions 0006, 0023): `/bin/sh -c`
# runs and writes, the user's directory is unchanged, nothing of it is copied into the
# box, and the writes outlive a stop and start.
sc_rootfs_busybox() {
    root="$WORK/busybox-root"
    rm -rf "$root"; mkdir -p "$root/bin" "$root/etc" || fail "mkdir $root"
    cp "$BUSYBOX" "$root/bin/busybox" || fail "cp busybox"
    chroot "$root" /bin/busybox --install -s /bin 2>/dev/null || ln -s busybox "$root/bin/sh"
    echo keep > "$root/etc/untouched"
    snap() { find "$1" -exec stat -c '%n %s %Y %i' {} + | sort | md5sum; }
    before="$(snap "$root")"
    id="$(bs create --rootfs "$root")" || fail "create --rootfs failed"
    [ -z "$(ls -A "$HOME_/boxes/$id/rootfs")" ] || fail "the box's own layer is not empty: $(ls -A "$HOME_/boxes/$id/rootfs")"
    echo "@@VM metric rootfs_box_dir_kib $(du -sk "$HOME_/boxes/$id" | cut -f1)"
    bs start "$id" >/dev/null || box_fail "$HOME_" "$id" "start of a --rootfs box failed"
    out="$(bs exec "$id" -- /bin/sh -c 'echo hi > /x; cat /x')" || box_fail "$HOME_" "$id" "exec /bin/sh -c failed: $out"
    [ "$out" = hi ] || box_fail "$HOME_" "$id" "/bin/sh -c printed '$out'"
    out="$(bs exec "$id" -- /bin/sh -c 'echo more >> /etc/untouched; cat /etc/untouched; ls /bin/ls >/dev/null && echo applets')" || fail "exec 2 failed: $out"
    [ "$out" = "$(printf 'keep\nmore\napplets')" ] || fail "exec 2 printed '$out'"
    [ -e "$root/x" ] && fail "the guest's write reached the user's directory"
    [ "$(cat "$root/etc/untouched")" = keep ] || fail "the user's file changed"
    [ "$(snap "$root")" = "$before" ] || fail "the user's directory changed"
    bs stop "$id" >/dev/null || fail "stop failed"
    bs start "$id" >/dev/null || box_fail "$HOME_" "$id" "second start failed"
    out="$(bs exec "$id" -- /bin/sh -c 'cat /x 2>/dev/null || echo gone')" || fail "exec 3 failed"
    [ "$out" = hi ] || fail "a write of the previous run is gone after stop/start: '$out' (decision 0023: the box's disk keeps it)"
    [ "$(snap "$root")" = "$before" ] || fail "the user's directory changed by the restart"
    bs rm -f "$id" || fail "rm failed"
    [ "$(snap "$root")" = "$before" ] || fail "the user's directory changed by rm"
}

run rootfs-busybox sc_rootfs_busybox
cleanup

# Issue 21, published ports: busybox httpd in the box serves 1 MB through `-p` (which
# implies the network; bound on 127.0.0.1 by default), fetched here on the TCG host over
# busybox nc, sha256 intact; `ls` and `inspect` show the port; a second box asking for
# the same host port is refused at start at once, naming the port and its holder (the
# first box's passt).
PORT=18080
sc_port_publish() {
    id="$(create_started -p "$PORT:80")" || exit 1
    bs inspect "$id"
    bs ls | grep -q "127.0.0.1:$PORT->80/tcp" || fail "ls does not show the port: $(bs ls)"
    bs inspect "$id" --json | grep -q "\"host_port\": $PORT" || fail "inspect --json has no port"
    bs exec "$id" -- /bin/sh -c '/bin/busybox mkdir -p /www && /bin/busybox dd if=/dev/urandom of=/www/big.bin bs=1024 count=1024 2>/dev/null' || box_fail "$HOME_" "$id" "cannot write the file in the box"
    want="$(bs exec "$id" -- /bin/busybox sha256sum /www/big.bin | cut -d' ' -f1)"
    [ ${#want} -eq 64 ] || fail "no sha256 in the box: '$want'"
    bs exec "$id" -- /bin/busybox httpd -p 80 -h /www || box_fail "$HOME_" "$id" "httpd did not start in the box"
    # An HTTP/1.0 GET over busybox nc (the static busybox's wget segfaults here: glibc
    # NSS from a static binary); the body is the last 1 MiB of the response, so a short
    # or corrupted body changes the sha256.
    fetch() {
        rm -f /tmp/got.http
        ( printf 'GET /big.bin HTTP/1.0\r\n\r\n'; "$BUSYBOX" sleep 5 ) \
            | "$BUSYBOX" timeout 60 "$BUSYBOX" nc 127.0.0.1 "$PORT" > /tmp/got.http
        head -1 /tmp/got.http | grep -q ' 200 ' || return 1
        tail -c 1048576 /tmp/got.http > /tmp/got.bin
    }
    i=0
    until fetch; do
        i=$((i + 1)); [ $i -lt 10 ] || box_fail "$HOME_" "$id" "GET through 127.0.0.1:$PORT failed: $(head -c 200 /tmp/got.http)"
        sleep 2
    done
    got="$(sha256sum /tmp/got.bin | cut -d" " -f1)"
    total="$(wc -c < /tmp/got.http | tr -d " ")"
    echo "response $total bytes; body sha256: box $want, host $got"
    grep -aq 'Content-Length: 1048576' /tmp/got.http || fail "no Content-Length: 1048576 in $(head -c 300 /tmp/got.http)"
    [ "$got" = "$want" ] || fail "sha256 differs: box $want, host $got"
    passt="$(bs inspect "$id" --json | sed -n '/"companions"/,$p' | sed -n 's/.*"pid": \([0-9]*\).*/\1/p' | head -1)"
    two="$(bs create -p "$PORT:80")" || fail "create of the second box failed"
    t0=$(now_ms)
    err="$(bs start "$two" 2>&1)" && fail "the second box started on a taken port"
    echo "second start refused in $(( $(now_ms) - t0 )) ms: $err"
    echo "$err" | grep -q "127.0.0.1:$PORT/tcp" || fail "the refusal does not name the port: $err"
    echo "$err" | grep -q "in use" || fail "the refusal does not say in use: $err"
    echo "$err" | grep -q "pid $passt, command \"passt" || fail "the refusal does not name passt $passt: $err"
    [ "$(bs inspect "$two" --json | json_field state)" = stopped ] || fail "the second box is not stopped"
    # Still served after the refusal.
    fetch || fail "the first box stopped serving"
    [ "$(sha256sum /tmp/got.bin | cut -d" " -f1)" = "$want" ] || fail "second fetch differs"
    bs rm -f "$two" "$id" || fail "rm failed"
    [ -z "$(passts)" ] || fail "passt left after rm: $(passts)"
}

# Issue 21, resources: --cpus 2 --memory 300m are what the guest sees.
sc_resources() {
    id="$(create_started --cpus 2 --memory 300m)" || exit 1
    n="$(bs exec "$id" -- /bin/busybox nproc)" || box_fail "$HOME_" "$id" "nproc failed"
    kib="$(bs exec "$id" -- /bin/busybox awk '/^MemTotal:/ { print $2 }' /proc/meminfo)" || fail "meminfo failed"
    echo "nproc $n, MemTotal $kib kB"
    echo "@@VM metric resources_memtotal_kib $kib"
    [ "$n" = 2 ] || fail "nproc is '$n', not 2"
    # 300 MiB is 307200 kB. libkrun maps the guest kernel's image, and the RAM below its
    # load address, beside the memory asked for (arch_memory_regions: RAM ends at
    # load address + kernel size + size), and the kernel keeps reserved pages out of
    # MemTotal: seen 316816 kB. The band: 300 MiB - 16 MiB .. 300 MiB + 32 MiB.
    [ "$kib" -ge 290816 ] && [ "$kib" -le 339968 ] || fail "MemTotal $kib kB is outside 290816..339968"
    bs rm -f "$id" || fail "rm failed"
}

run port-publish sc_port_publish
run resources sc_resources
cleanup

# --- the persistent writable layer (issue 21 item 1, decision 0023) -------------------------
disk_of() { echo "$HOME_/boxes/$1/disk.ext4"; }
# in_box ID SCRIPT: run SCRIPT with the box's busybox sh.
in_box() { bs exec "$1" -- /bin/busybox sh -c "$2"; }
BB=/bin/busybox
# fsck_clean IMAGE: a full e2fsck of a stopped box's disk finds nothing to fix but the
# superblock's free block and inode totals. The agent syncs but cannot unmount the disk
# (its root is the overlay on it), so the filesystem is not marked clean, and ext4 does
# not keep those two totals current in the superblock of a mounted filesystem (it sums
# the group descriptors at mount): e2fsck recomputes them. A journal replay is not an
# error either; any other fix is, a group's counts included ("… for group #N").
fsck_clean() {
    out="$(e2fsck -fy "$1" 2>&1)"; rc=$?
    echo "$out"
    [ $rc -le 1 ] || fail "e2fsck exit $rc on $1"
    fixes=$(echo "$out" | grep -c '? yes')
    totals=$(echo "$out" | grep -c -E '^Free (blocks|inodes) count wrong \([0-9]+, counted=[0-9]+\)\.$')
    [ "$fixes" -le "$totals" ] || fail "e2fsck had to fix $1 beyond the superblock totals: $(echo "$out" | grep -B2 '? yes' | head -9)"
    true
}

sc_disk_persists() {
    id="$(create_started)" || exit 1
    img="$(disk_of "$id")"
    [ -f "$img" ] || fail "no disk image at $img"
    echo "image: $(stat -c '%s bytes, %b blocks of %B' "$img")"
    [ "$(stat -c %s "$img")" = 8589934592 ] || fail "default size is not 8 GiB: $(stat -c %s "$img")"
    a="$(in_box "$id" "$BB dd if=/dev/urandom of=/data.bin bs=1M count=100 2>/dev/null && $BB sync && $BB sha256sum /data.bin")" \
        || box_fail "$HOME_" "$id" "writing 100 MB failed: $a"
    echo "written: $a"
    bs stop "$id" >/dev/null || fail "stop failed"
    alloc=$(( $(stat -c %b "$img") * $(stat -c %B "$img") ))
    echo "allocated after 100 MB: $alloc bytes"
    [ "$alloc" -ge 104857600 ] || fail "the image holds $alloc bytes after 100 MB were written"
    bs inspect "$id" | grep '^disk:' || fail "inspect shows no disk"
    bs start "$id" >/dev/null || box_fail "$HOME_" "$id" "second start failed"
    b="$(in_box "$id" "$BB sha256sum /data.bin")" || box_fail "$HOME_" "$id" "reading back failed: $b"
    [ "$a" = "$b" ] || fail "after stop/start: '$b', before: '$a'"
    bs rm -f "$id" >/dev/null || fail "rm failed"
}

sc_disk_killed_vmm() {
    id="$(create_started)" || exit 1
    a="$(in_box "$id" "$BB dd if=/dev/urandom of=/kept.bin bs=1M count=20 2>/dev/null && $BB sync && $BB sha256sum /kept.bin")" \
        || box_fail "$HOME_" "$id" "writing failed: $a"
    shim="$(bs inspect "$id" --json | json_field pid)"
    [ -n "$shim" ] && alive "$shim" || fail "no live shim: $shim"
    kill -9 "$shim"
    t0=$(now_ms)
    while [ "$(bs inspect "$id" --json | json_field state)" != stopped ]; do
        [ $(( $(now_ms) - t0 )) -lt 10000 ] || fail "not stopped 10 s after the shim was killed"
        sleep 0.2
    done
    bs sweep >/dev/null || fail "sweep failed"
    bs start "$id" >/dev/null || box_fail "$HOME_" "$id" "start after the killed VMM failed"
    b="$(in_box "$id" "$BB sha256sum /kept.bin")" || box_fail "$HOME_" "$id" "reading back failed: $b"
    [ "$a" = "$b" ] || fail "after kill -9 of the VMM: '$b', before: '$a'"
    # The filesystem takes writes again (the journal replayed at the mount).
    c="$(in_box "$id" "echo again > /again && $BB cat /again")" || fail "write after recovery failed: $c"
    [ "$c" = again ] || fail "write after recovery read '$c'"
    bs stop "$id" >/dev/null || fail "stop failed"
    fsck_clean "$(disk_of "$id")"
    bs rm -f "$id" >/dev/null || fail "rm failed"
}

sc_disk_rm() {
    id="$(create_started)" || exit 1
    in_box "$id" "echo x > /x" || fail "write failed"
    img="$(disk_of "$id")"
    [ -f "$img" ] || fail "no disk image"
    bs rm -f "$id" >/dev/null || fail "rm failed"
    [ -e "$img" ] && fail "$img left after rm"
    left="$(find "$HOME_" -name 'disk.ext4*')"
    [ -z "$left" ] || fail "disk images left after rm: $left"
    true
}

sc_disk_full() {
    id="$(create_started --disk-size 64m)" || exit 1
    img="$(disk_of "$id")"
    [ "$(stat -c %s "$img")" = 67108864 ] || fail "size $(stat -c %s "$img"), not 64 MiB"
    out="$(in_box "$id" "$BB dd if=/dev/zero of=/fill bs=1M count=200 2>&1; echo rc=\$?")"
    echo "$out"
    echo "$out" | grep -q 'No space left on device' || box_fail "$HOME_" "$id" "no ENOSPC: $out"
    echo "$out" | grep -q 'rc=0' && fail "writing 200 MB to a 64 MiB disk succeeded"
    [ "$(bs exec "$id" -- $BB echo alive)" = alive ] || box_fail "$HOME_" "$id" "the box does not answer exec with a full disk"
    in_box "$id" "$BB rm /fill && echo small > /small && $BB sync" || fail "freeing space and writing again failed"
    bs stop "$id" >/dev/null || fail "stop failed"
    [ "$(stat -c %s "$img")" = 67108864 ] || fail "the image grew to $(stat -c %s "$img")"
    fsck_clean "$img"
    bs start "$id" >/dev/null || box_fail "$HOME_" "$id" "start after a full disk failed"
    [ "$(in_box "$id" "$BB cat /small")" = small ] || fail "the file written after freeing space is gone"
    bs rm -f "$id" >/dev/null || fail "rm failed"
}

# Start→ready of a box whose writes go to its disk (subject) against the same kind of
# box with the tmpfs upper (floor: `--backend-option upper=tmpfs` at its start), in
# alternating pairs; both disks/boxes are started once before (the disk is made at the
# first start: reported as disk_first_start_ms, not paired). tests/vm asserts a loose
# guard on the median (DISK_START_READY).
DISK_PAIRS=10
sc_disk_start_ready() {
    s="$(bs create)" || fail "create failed"; add_busybox "$HOME_" "$s"
    f="$(bs create)" || fail "create failed"; add_busybox "$HOME_" "$f"
    t0=$(now_ms)
    bs start "$s" >/dev/null || box_fail "$HOME_" "$s" "first start failed"
    echo "@@VM metric disk_first_start_ms $(( $(now_ms) - t0 ))"
    bs stop "$s" >/dev/null || fail "stop failed"
    BS_EXTRA="--backend-option upper=tmpfs" bs start "$f" >/dev/null || box_fail "$HOME_" "$f" "first tmpfs start failed"
    bs stop "$f" >/dev/null || fail "stop failed"
    [ -e "$(disk_of "$f")" ] && fail "the tmpfs box has a disk"
    i=1
    while [ $i -le $DISK_PAIRS ]; do
        if [ $((i % 2)) -eq 1 ]; then order=subject-first; else order=floor-first; fi
        for what in $( [ $order = subject-first ] && echo "s f" || echo "f s" ); do
            if [ $what = s ]; then box=$s; extra=""; else box=$f; extra="--backend-option upper=tmpfs"; fi
            t0=$(now_ms)
            BS_EXTRA="$extra" bs start "$box" >/dev/null || box_fail "$HOME_" "$box" "start $i of $box failed"
            ms=$(( $(now_ms) - t0 ))
            bs stop "$box" >/dev/null || fail "stop $i failed"
            if [ $what = s ]; then sub=$ms; else flo=$ms; fi
        done
        echo "@@VM pair disk_start_ready $i $order $sub $flo"
        i=$((i + 1))
    done
    bs rm -f "$s" "$f" >/dev/null || fail "rm failed"
}

# A sequential read of a 100 MB file from the box's disk (subject, timed inside the box
# from /proc/uptime) against the same read of a file on the TCG host (floor), each after
# dropping the page caches of the guest and of the TCG host, in alternating pairs.
READ_PAIRS=5
sc_disk_read() {
    id="$(create_started)" || exit 1
    in_box "$id" "$BB dd if=/dev/urandom of=/r.bin bs=1M count=100 2>/dev/null && $BB sync" || fail "write failed"
    dd if=/dev/urandom of="$WORK/r.bin" bs=1M count=100 2>/dev/null && sync || fail "host write failed"
    i=1
    while [ $i -le $READ_PAIRS ]; do
        if [ $((i % 2)) -eq 1 ]; then order=subject-first; else order=floor-first; fi
        for what in $( [ $order = subject-first ] && echo "s f" || echo "f s" ); do
            sync; echo 3 > /proc/sys/vm/drop_caches
            if [ $what = s ]; then
                t="$(in_box "$id" "$BB sync; echo 3 > /proc/sys/vm/drop_caches; read a _ < /proc/uptime; $BB dd if=/r.bin of=/dev/null bs=1M 2>/dev/null; read b _ < /proc/uptime; echo \$a \$b")" \
                    || fail "read in the box failed: $t"
                sub=$(echo "$t" | awk '{ printf "%d", ($2 - $1) * 1000 }')
            else
                t0=$(now_ms)
                dd if="$WORK/r.bin" of=/dev/null bs=1M 2>/dev/null || fail "host read failed"
                flo=$(( $(now_ms) - t0 ))
            fi
        done
        echo "@@VM pair disk_read $i $order $sub $flo"
        i=$((i + 1))
    done
    rm -f "$WORK/r.bin"
    bs rm -f "$id" >/dev/null || fail "rm failed"
}

run disk-persists sc_disk_persists
run disk-killed-vmm sc_disk_killed_vmm
run disk-rm sc_disk_rm
run disk-full sc_disk_full
sc_timeout_saved="$SC_TIMEOUT"; SC_TIMEOUT=$((SC_TIMEOUT * 3))
run disk-start-ready sc_disk_start_ready
run disk-read sc_disk_read
SC_TIMEOUT="$sc_timeout_saved"
cleanup

# Issue 20: OCI images. The guest builds a two-layer OCI image from its static busybox
# (layer 1: busybox, /etc/keep, /etc/gone; layer 2: a whiteout of /etc/gone, /etc/top,
# /srv), archives it, imports it into the home's store and runs it (decision 0018: the
# layers merged once per image into hard links, whiteouts applied, shown as the read-only
# lower layer of the guest's overlay).
IMG=localhost/vm-image:1
IMG_WORK="$WORK/oci"
sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { wc -c < "$1" | tr -d ' '; }
# blob FILE: store FILE as a blob of the layout; prints its hex digest.
blob() { h="$(sha "$1")"; cp "$1" "$IMG_WORK/layout/blobs/sha256/$h"; echo "$h"; }
build_image() {
    rm -rf "$IMG_WORK"; mkdir -p "$IMG_WORK/l1/bin" "$IMG_WORK/l1/etc" "$IMG_WORK/l2/etc" \
        "$IMG_WORK/l2/srv" "$IMG_WORK/layout/blobs/sha256" || return 1
    cp "$BUSYBOX" "$IMG_WORK/l1/bin/busybox" && ln -s busybox "$IMG_WORK/l1/bin/sh" || return 1
    echo keep > "$IMG_WORK/l1/etc/keep"; echo gone > "$IMG_WORK/l1/etc/gone"
    : > "$IMG_WORK/l2/etc/.wh.gone"; echo top > "$IMG_WORK/l2/etc/top"
    (cd "$IMG_WORK/l1" && tar -cf ../l1.tar .) && (cd "$IMG_WORK/l2" && tar -cf ../l2.tar .) || return 1
    d1="$(blob "$IMG_WORK/l1.tar")"; d2="$(blob "$IMG_WORK/l2.tar")"
    printf '%s' "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Cmd\":[\"/bin/sh\",\"-c\",\"echo default-cmd; pwd; echo A=\$A\"],\"Env\":[\"PATH=/bin\",\"A=image\"],\"WorkingDir\":\"/srv\"},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$d1\",\"sha256:$d2\"]}}" > "$IMG_WORK/config.json"
    c="$(blob "$IMG_WORK/config.json")"
    L=application/vnd.oci.image.layer.v1.tar
    printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$c\",\"size\":$(size "$IMG_WORK/config.json")},\"layers\":[{\"mediaType\":\"$L\",\"digest\":\"sha256:$d1\",\"size\":$(size "$IMG_WORK/l1.tar")},{\"mediaType\":\"$L\",\"digest\":\"sha256:$d2\",\"size\":$(size "$IMG_WORK/l2.tar")}]}" > "$IMG_WORK/manifest.json"
    m="$(blob "$IMG_WORK/manifest.json")"
    printf '%s' "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$m\",\"size\":$(size "$IMG_WORK/manifest.json"),\"annotations\":{\"org.opencontainers.image.ref.name\":\"$IMG\"}}]}" > "$IMG_WORK/layout/index.json"
    printf '{"imageLayoutVersion":"1.0.0"}' > "$IMG_WORK/layout/oci-layout"
    (cd "$IMG_WORK/layout" && tar -cf ../image.tar .) || return 1
    echo "$m"
}
# import_image: the archive into the home's store (`boxsock image import`).
import_image() {
    bs image import "$IMG_WORK/image.tar"
}
# need_image: the image in the home's store, built and imported if it is not. Each
# scenario makes what it needs: after a freeze, the TCG host is booted afresh for the
# scenarios that had not reported (tests/vm), without what earlier ones left.
need_image() {
    bs image inspect "$IMG" >/dev/null 2>&1 && return
    build_image >/dev/null && import_image >/dev/null || fail "cannot build and import $IMG"
}

sc_image_default_cmd() {
    m="$(build_image)" || fail "cannot build the OCI image"
    echo "manifest sha256:$m"
    import_image || fail "import of the archive failed"
    out="$(bs run --rm "$IMG" 2>&1)" || fail "run $IMG failed: $out"
    [ "$out" = "$(printf 'default-cmd\n/srv\nA=image')" ] || fail "the default Cmd printed '$out'"
}

sc_image_overrides() {
    need_image
    out="$(bs run --rm -e A=from-e -w /etc "$IMG" 2>&1)" || fail "run -e -w failed: $out"
    [ "$out" = "$(printf 'default-cmd\n/etc\nA=from-e')" ] || fail "-e/-w: printed '$out'"
    out="$(bs run --rm "$IMG" -- /bin/sh -c 'echo cmd; pwd' 2>&1)" || fail "run -- CMD failed: $out"
    [ "$out" = "$(printf 'cmd\n/srv')" ] || fail "-- CMD with the image's WorkingDir: printed '$out'"
    out="$(bs run --rm -w /etc "$IMG" -- /bin/sh -c 'echo cmd; cat top' 2>&1)" || fail "run -w -- CMD failed: $out"
    [ "$out" = "$(printf 'cmd\ntop')" ] || fail "-- CMD: printed '$out'"
}

sc_image_whiteout() {
    need_image
    out="$(bs run --rm "$IMG" -- /bin/sh -c 'ls -a /etc; test -e /etc/gone && echo GONE-PRESENT; true' 2>&1)" \
        || fail "run failed: $out"
    echo "$out"
    echo "$out" | grep -qx keep || fail "/etc/keep (lower layer) missing: $out"
    echo "$out" | grep -qx top || fail "/etc/top (upper layer) missing: $out"
    echo "$out" | grep -q 'GONE-PRESENT\|^gone$' && fail "/etc/gone, deleted by the upper layer's whiteout, is in the guest"
    echo "$out" | grep -q '^\.wh\.' && fail "a whiteout marker is shown in the guest: $out"
    # The layers keep their markers: the merge wrote nothing there.
    ls -a "$HOME_"/images/layers/sha256/*/root/etc | grep -q '^\.wh\.gone$' || fail "the upper layer lost its marker"
    true
}

sc_image_shared_layers() {
    need_image
    a="$(bs create "$IMG")" || fail "create 1 failed"
    bs start "$a" >/dev/null || box_fail "$HOME_" "$a" "start 1 failed"
    before="$(du -sk "$HOME_" | cut -f1)"
    b="$(bs create "$IMG")" || fail "create 2 failed"
    after="$(du -sk "$HOME_" | cut -f1)"
    bs start "$b" >/dev/null || box_fail "$HOME_" "$b" "start 2 failed"
    for x in "$a" "$b"; do
        out="$(bs exec "$x" -- /bin/sh -c 'echo $A; cat /etc/keep')" || fail "exec in $x failed"
        [ "$out" = "$(printf 'image\nkeep')" ] || fail "exec in $x printed '$out'"
    done
    growth=$(( (after - before) * 1024 ))
    bb=$(size "$BUSYBOX")
    echo "second box: the home grew by $growth bytes (busybox alone is $bb)"
    echo "@@VM metric image_second_box_growth_bytes $growth"
    [ "$growth" -lt "$bb" ] || fail "the second box grew the home by $growth bytes, more than busybox ($bb): its layers were copied"
    # One root for the image, its busybox the layer's very inode.
    [ "$(ls "$HOME_/images/roots" | wc -l)" = 1 ] || fail "more than one image root: $(ls "$HOME_/images/roots")"
    [ "$(stat -c %h "$HOME_"/images/roots/*/root/bin/busybox)" = 2 ] || fail "busybox in the root is not the layer's inode"
    bs rm -f "$a" "$b" >/dev/null || fail "rm failed"
}

# Start→ready of an image box (subject) against a --rootfs box of the very same tree
# (floor: the image's root given as --rootfs), in alternating pairs; tests/vm asserts the
# median of the per-pair ratios (guarded at 1.15×; the issue's target is 1.05×, and the
# medians measured so far are 0.94×, 1.03× and 1.044×: see IMAGE_START_READY). 24 pairs
# narrow the median's spread.
IMAGE_PAIRS=24
sc_image_start_ready() {
    need_image
    s="$(bs create "$IMG")" || fail "create image box failed"
    root="$(ls -d "$HOME_"/images/roots/*/root | head -1)"
    if [ ! -d "$root" ]; then
        # Merged at the image box's first start, when no box of the image ran before.
        bs start "$s" >/dev/null && bs stop "$s" >/dev/null || box_fail "$HOME_" "$s" "first start failed"
        root="$(ls -d "$HOME_"/images/roots/*/root | head -1)"
    fi
    [ -d "$root" ] || fail "no image root"
    f="$(bs create --rootfs "$root")" || fail "create --rootfs box failed"
    i=1
    while [ $i -le $IMAGE_PAIRS ]; do
        if [ $((i % 2)) -eq 1 ]; then order=subject-first; else order=floor-first; fi
        for what in $( [ $order = subject-first ] && echo "s f" || echo "f s" ); do
            eval "box=\$$what"
            t0=$(now_ms)
            bs start "$box" >/dev/null || box_fail "$HOME_" "$box" "start $i of $box failed"
            ms=$(( $(now_ms) - t0 ))
            bs stop "$box" >/dev/null || fail "stop $i failed"
            if [ $what = s ]; then sub=$ms; else flo=$ms; fi
        done
        echo "@@VM pair image_start_ready $i $order $sub $flo"
        i=$((i + 1))
    done
    bs rm -f "$s" "$f" >/dev/null || fail "rm failed"
}

# Issue 20: run as a user (decision 0020). A one-layer image of busybox with its own
# /etc/passwd and /etc/group and `User: app`: the agent resolves the name in the box's
# root (not the host's, which has no `app`); `-u` overrides it; it is the default of
# `exec`; an unknown user runs nothing; `create IMAGE -- CMD` + `start -a` runs the
# stored command as the image's user.
UIMG=localhost/vm-user:1
build_user_image() (
    IMG_WORK="$WORK/oci-user"
    rm -rf "$IMG_WORK"; mkdir -p "$IMG_WORK/l1/bin" "$IMG_WORK/l1/etc" "$IMG_WORK/l1/home/app" \
        "$IMG_WORK/layout/blobs/sha256" || exit 1
    cp "$BUSYBOX" "$IMG_WORK/l1/bin/busybox" || exit 1
    for a in sh id touch; do ln -s busybox "$IMG_WORK/l1/bin/$a" || exit 1; done
    printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n' > "$IMG_WORK/l1/etc/passwd"
    printf 'root:x:0:\napp:x:1000:\nextra:x:2000:app\n' > "$IMG_WORK/l1/etc/group"
    (cd "$IMG_WORK/l1" && tar -cf ../l1.tar .) || exit 1
    d1="$(blob "$IMG_WORK/l1.tar")"
    printf '%s' "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"User\":\"app\",\"Cmd\":[\"/bin/sh\",\"-c\",\"id -u; id -G; echo \$HOME\"],\"Env\":[\"PATH=/bin\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$d1\"]}}" > "$IMG_WORK/config.json"
    c="$(blob "$IMG_WORK/config.json")"
    L=application/vnd.oci.image.layer.v1.tar
    printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$c\",\"size\":$(size "$IMG_WORK/config.json")},\"layers\":[{\"mediaType\":\"$L\",\"digest\":\"sha256:$d1\",\"size\":$(size "$IMG_WORK/l1.tar")}]}" > "$IMG_WORK/manifest.json"
    m="$(blob "$IMG_WORK/manifest.json")"
    printf '%s' "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$m\",\"size\":$(size "$IMG_WORK/manifest.json"),\"annotations\":{\"org.opencontainers.image.ref.name\":\"$UIMG\"}}]}" > "$IMG_WORK/layout/index.json"
    printf '{"imageLayoutVersion":"1.0.0"}' > "$IMG_WORK/layout/oci-layout"
    (cd "$IMG_WORK/layout" && tar -cf ../image.tar .) || exit 1
    echo "$IMG_WORK/image.tar"
)

sc_image_user() {
    tarball="$(build_user_image)" || fail "cannot build the user image"
    bs image import "$tarball" >/dev/null || fail "import of the user image failed"
    out="$(bs run --rm "$UIMG" 2>&1)" || fail "run $UIMG failed: $out"
    [ "$out" = "$(printf '1000\n1000 2000\n/home/app')" ] || fail "the image's User app: printed '$out'"
    out="$(bs run --rm -u 0 "$UIMG" -- id -u 2>&1)" || fail "run -u 0 failed: $out"
    [ "$out" = 0 ] || fail "-u 0 did not override the image's User: '$out'"
    b="$(bs create "$UIMG" -- /bin/sh -c 'id -un; exit 4')" || fail "create IMAGE -- CMD failed"
    out="$(bs start -a "$b" 2>&1)"; rc=$?
    [ $rc = 4 ] && [ "$out" = app ] || box_fail "$HOME_" "$b" "start -a: status $rc, printed '$out'"
    bs start "$b" >/dev/null || box_fail "$HOME_" "$b" "start failed"
    out="$(bs exec "$b" -- id -u 2>&1)" || fail "exec failed: $out"
    [ "$out" = 1000 ] || fail "exec without -u does not run as the image's User: '$out'"
    out="$(bs exec -u 4242:7 "$b" -- /bin/sh -c 'id -u; id -G; echo $HOME' 2>&1)" || fail "exec -u failed: $out"
    [ "$out" = "$(printf '4242\n7\n/')" ] || fail "exec -u 4242:7 printed '$out'"
    out="$(bs exec -u ghost "$b" -- touch /ran 2>&1)" && fail "exec -u ghost succeeded: $out"
    echo "$out" | grep -q 'no user named "ghost"'  || fail "exec -u ghost said '$out'"
    bs exec "$b" -- /bin/sh -c 'test ! -e /ran' || fail "exec -u ghost ran its command"
    bs rm -f "$b" >/dev/null || fail "rm failed"
}

run image-default-cmd sc_image_default_cmd
run image-overrides sc_image_overrides
run image-whiteout sc_image_whiteout
run image-shared-layers sc_image_shared_layers
run image-user sc_image_user
sc_timeout_saved="$SC_TIMEOUT"; SC_TIMEOUT=$((SC_TIMEOUT * 3))
run image-start-ready sc_image_start_ready
SC_TIMEOUT="$sc_timeout_saved"
cleanup

# --- volumes (issue 21 item 2; decision 0022) -------------------------------------------------

# A rw volume round-trips: what the host put there the box reads, what the box writes
# the host sees, and what the host writes while the box runs the box sees. Its mount
# point (/data/rw, missing in the root) is made in the box's writable layer: not in the
# box's own layer on the host, not in the shared guest base.
sc_volume_rw() {
    v="$WORK/vol-rw"; rm -rf "$v"; mkdir -p "$v" && echo host-wrote > "$v/from-host"
    id="$(create_started -v "$v:/data/rw")" || exit 1
    out="$(bs exec "$id" -- /bin/busybox cat /data/rw/from-host 2>&1)" || box_fail "$HOME_" "$id" "reading the volume failed: $out"
    [ "$out" = host-wrote ] || box_fail "$HOME_" "$id" "the box read '$out' from the volume"
    bs exec "$id" -- /bin/sh -c 'echo box-wrote > /data/rw/from-box' || box_fail "$HOME_" "$id" "writing the volume failed"
    [ "$(cat "$v/from-box" 2>&1)" = box-wrote ] || fail "the host reads '$(cat "$v/from-box" 2>&1)' for what the box wrote"
    echo while-running > "$v/later"
    out="$(bs exec "$id" -- /bin/busybox cat /data/rw/later 2>&1)"
    [ "$out" = while-running ] || fail "the box read '$out' for what the host wrote while it ran"
    mounts="$(bs exec "$id" -- /bin/busybox grep ' /data/rw ' /proc/mounts)"
    echo "mount: $mounts"
    echo "$mounts" | grep -q '^boxsock-vol0 /data/rw virtiofs rw' || fail "/data/rw is not the rw virtio-fs volume: $mounts"
    [ -e "$HOME_/boxes/$id/rootfs/data" ] && fail "the mount point was made in the box layer on the host"
    for b in "$HOME_"/bases/*; do [ -e "$b/data" ] && fail "the mount point was made in the guest base $b"; done
    bs rm -f "$id" >/dev/null || fail "rm failed"
    [ "$(cat "$v/from-box")" = box-wrote ] || fail "rm changed the volume"
    rm -rf "$v"
}

# A :ro volume refuses writes with EROFS (a new file, a change, a removal) and its host
# directory is unchanged; a guest path that is a file in the box's root fails the start
# at once, the error naming the path.
sc_volume_ro() {
    v="$WORK/vol-ro"; rm -rf "$v"; mkdir -p "$v" && echo keep > "$v/kept"
    snap() { find "$v" | sort; stat -c '%n %s %Y %i %a' "$v" "$v"/*; md5sum "$v/kept"; }
    before="$(snap)"
    id="$(create_started -v "$v:/ro:ro")" || exit 1
    [ "$(bs exec "$id" -- /bin/busybox cat /ro/kept)" = keep ] || box_fail "$HOME_" "$id" "reading the ro volume failed"
    for w in 'echo x > /ro/new' 'echo x >> /ro/kept' 'rm /ro/kept' 'mkdir /ro/d'; do
        out="$(bs exec "$id" -- /bin/sh -c "$w" 2>&1)" && fail "'$w' succeeded in a :ro volume"
        echo "'$w': $out"
        echo "$out" | grep -qi 'read-only file system' || fail "'$w' failed without EROFS: $out"
    done
    mounts="$(bs exec "$id" -- /bin/busybox grep ' /ro ' /proc/mounts)"
    echo "$mounts" | grep -q '^boxsock-vol0 /ro virtiofs ro' || fail "/ro is not mounted read-only: $mounts"
    [ "$(snap)" = "$before" ] || fail "the ro volume's host directory changed"
    bs rm -f "$id" >/dev/null || fail "rm failed"
    # /bin/busybox is a file in the box's root.
    id="$(bs create -v "$v:/bin/busybox")" || fail "create failed"
    add_busybox "$HOME_" "$id"
    out="$(bs start "$id" 2>&1)" && fail "a volume on a file started: $out"
    echo "$out" | tail -5
    echo "$out" | grep -q '/bin/busybox.* exists in the box.s root and is not a directory' || fail "the start error does not name the path: $out"
    bs rm -f "$id" >/dev/null || fail "rm failed"
    rm -rf "$v"
}

# How many virtio-fs volumes a guest takes (each share is a virtio-mmio device with its
# own interrupt line): the spec of a box with one volume and no network, replayed by
# vm-bare-launch with k more shares, each also mounted by the agent (so a device that
# never appeared fails readiness too), for k = 0, 1, … until a launch fails. create
# enforces what a box *with* a network takes (the net device costs one more line): the
# measured count must be that limit (parsed from create's refusal) plus one, and a
# --network box of exactly the limit, made through the CLI, boots and sees every volume.
sc_volume_limit() {
    v="$WORK/vol-lim"; rm -rf "$v"; mkdir -p "$v" && echo x > "$v/x"
    many=""; i=0; while [ $i -lt 20 ]; do many="$many -v $v:/m$i"; i=$((i + 1)); done
    out="$(bs create $many 2>&1)" && fail "20 volumes were accepted"
    limit="$(echo "$out" | sed -n 's/.*takes at most \([0-9]*\).*/\1/p')"
    [ -n "$limit" ] || fail "the refusal names no limit: $out"
    echo "create refuses 20 volumes: $out"
    id="$(bs create -v "$v:/m0")" || fail "create failed"
    add_busybox "$HOME_" "$id"
    bs start "$id" >/dev/null && bs stop "$id" >/dev/null || box_fail "$HOME_" "$id" "the one-volume box failed"
    spec="$HOME_/boxes/$id/shim-spec.json"; cp "$spec" "$WORK/lim-spec.json"
    k=0; measured=""
    while [ $k -le 10 ]; do
        cp "$WORK/lim-spec.json" "$WORK/lim-k.json"; j=1
        while [ $j -le $k ]; do
            sed -i "s|\"shares\":\[|\"shares\":[{\"tag\":\"boxsock-x$j\",\"host_path\":\"$v\",\"read_only\":true},|; s|\"args\":\[|\"args\":[\"--volume\",\"boxsock-x$j:ro:/x$j\",|" "$WORK/lim-k.json"
            j=$((j + 1))
        done
        cp "$WORK/lim-k.json" "$spec"
        if out="$(vm-bare-launch start "$spec" "$BIN/boxsock-krun-shim" 2>&1)"; then
            echo "$((k + 1)) volumes, no network: booted"
            vm-bare-launch kill "${out%% *}" "$spec" || fail "killing the bare shim failed"
        else
            echo "$((k + 1)) volumes, no network: failed: $out"
            tail -8 "$HOME_/boxes/$id/logs/box.log"
            measured=$k
            break
        fi
        k=$((k + 1))
    done
    cp "$WORK/lim-spec.json" "$spec"
    [ -n "$measured" ] || fail "11 volumes booted: no limit found below 12"
    echo "@@VM metric volume_max_no_network $measured"
    echo "@@VM metric volume_max_enforced $limit"
    [ "$measured" = $((limit + 1)) ] || fail "a guest without a network takes $measured volumes; create enforces $limit (expected $((measured - 1)): the net device takes one line)"
    bs rm -f "$id" >/dev/null || fail "rm failed"
    many=""; i=0; while [ $i -lt "$limit" ]; do many="$many -v $v:/m$i:ro"; i=$((i + 1)); done
    id="$(create_started --network $many)" || exit 1
    n="$(bs exec "$id" -- /bin/busybox grep -c ' virtiofs ro' /proc/mounts)"
    [ "$(bs exec "$id" -- /bin/busybox cat /m$((limit - 1))/x)" = x ] || box_fail "$HOME_" "$id" "the last of $limit volumes is not there"
    echo "$limit volumes and a network through the CLI: $n read-only virtio-fs mounts in the box"
    bs rm -f "$id" >/dev/null || fail "rm failed"
    rm -rf "$v" "$WORK/lim-spec.json" "$WORK/lim-k.json"
}

# Sequential read of a 100 MB file from a volume in the box (the guest's page cache
# dropped first, so every byte crosses virtio-fs; timed inside the box, without the
# exec's own cost) against the same read with the same busybox dd on the TCG host (the
# file is on the host's tmpfs), in alternating pairs of each side's fastest of three.
# tests/vm asserts only a loose
# guard on the median (VOLUME_READ); docs/backends.md states the target.
VOLUME_READ_PAIRS=6
up_ms() { s=${1%.*}; c=${1#*.}; echo $((s * 1000 + ${c#0} * 10)); }
sc_volume_read() {
    v="$WORK/vol-read"; rm -rf "$v"; mkdir -p "$v"
    dd if=/dev/urandom of="$v/big" bs=1M count=100 2>/dev/null || fail "cannot write 100 MB"
    sum="$(md5sum < "$v/big")"
    id="$(create_started -v "$v:/vol:ro")" || exit 1
    [ "$(bs exec "$id" -- /bin/sh -c '/bin/busybox md5sum < /vol/big')" = "$sum" ] || fail "the 100 MB read in the box differs"
    i=1
    while [ $i -le $VOLUME_READ_PAIRS ]; do
        if [ $((i % 2)) -eq 1 ]; then order=subject-first; else order=floor-first; fi
        for what in $( [ $order = subject-first ] && echo "s f" || echo "f s" ); do
            # Each side's fastest of three: the host's read is about 100 ms on a 10 ms
            # clock, so one slow or coarse sample would move the ratio by a third.
            best=""
            for r in 1 2 3; do
                if [ $what = s ]; then
                    t="$(bs exec "$id" -- /bin/sh -c 'sync; echo 3 > /proc/sys/vm/drop_caches || exit 2; read a _ < /proc/uptime; /bin/busybox dd if=/vol/big of=/dev/null bs=1M 2>/dev/null || exit 1; read b _ < /proc/uptime; echo $a $b')" \
                        || box_fail "$HOME_" "$id" "read $i.$r in the box failed"
                    ms=$(( $(up_ms "${t#* }") - $(up_ms "${t% *}") ))
                else
                    t0=$(now_ms)
                    "$BUSYBOX" dd if="$v/big" of=/dev/null bs=1M 2>/dev/null || fail "read $i.$r on the host failed"
                    ms=$(( $(now_ms) - t0 ))
                fi
                if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
            done
            if [ $what = s ]; then sub=$best; else flo=$best; fi
        done
        echo "@@VM pair volume_read $i $order $sub $flo"
        i=$((i + 1))
    done
    bs rm -f "$id" >/dev/null || fail "rm failed"
    rm -rf "$v"
}

run volume-rw sc_volume_rw
run volume-ro sc_volume_ro
run volume-limit sc_volume_limit
run volume-read sc_volume_read
cleanup

# Issue 21's "done when", the README's web-server story end to end: a web server from an
# image, with a read-only volume of the site and a published port; what the box writes
# survives stop/start (its own disk), the volume stays the host's, and rm leaves nothing.
sc_web_story() {
    m="$(build_image)" || fail "cannot build the OCI image"
    import_image >/dev/null || fail "import of the archive failed"
    site="$WORK/site"; rm -rf "$site"; mkdir -p "$site" && echo "hello from the host" > "$site/index.html"
    id="$(bs run -d --name web -p 18081:80 -v "$site:/srv/www:ro" --cpus 2 --memory 256m "$IMG")" \
        || fail "run -d of the web box failed"
    get() {
        ( printf 'GET /index.html HTTP/1.0\r\n\r\n'; "$BUSYBOX" sleep 3 ) \
            | "$BUSYBOX" timeout 30 "$BUSYBOX" nc 127.0.0.1 18081 > /tmp/web.http 2>/dev/null
        head -1 /tmp/web.http | grep -q ' 200 ' && tail -1 /tmp/web.http
    }
    serve() {
        bs exec web -- /bin/busybox httpd -p 80 -h /srv/www || box_fail "$HOME_" "$id" "httpd did not start"
        i=0
        until body="$(get)"; do
            i=$((i + 1)); [ $i -lt 10 ] || box_fail "$HOME_" "$id" "GET failed: $(head -c 200 /tmp/web.http)"
            sleep 2
        done
        echo "$body"
    }
    [ "$(serve)" = "hello from the host" ] || fail "the site was not served: $(cat /tmp/web.http | head -c 300)"
    bs exec web -- /bin/sh -c 'echo kept > /etc/notes' || fail "cannot write in the box"
    bs exec web -- /bin/sh -c 'echo x > /srv/www/x' 2>/dev/null && fail "the read-only volume took a write"
    bs ls | grep -q '127.0.0.1:18081->80/tcp' || fail "ls does not show the port: $(bs ls)"
    bs stop web >/dev/null || fail "stop failed"
    echo "hello again" > "$site/index.html"
    bs start web >/dev/null || box_fail "$HOME_" "$id" "second start failed"
    [ "$(bs exec web -- /bin/busybox cat /etc/notes)" = kept ] || fail "the box's file did not survive stop/start"
    [ "$(serve)" = "hello again" ] || fail "the volume is not the host's directory after restart"
    [ ! -e "$site/x" ] || fail "a file appeared in the host's site directory"
    bs rm -f web >/dev/null || fail "rm failed"
    [ ! -e "$HOME_/boxes/$id" ] || fail "rm left the box directory: $(ls -la "$HOME_/boxes/$id")"
    [ -z "$(passts)" ] || fail "passt left after rm: $(passts)"
    [ -z "$(shims)" ] || fail "shims left after rm: $(shims)"
}
run web-story sc_web_story
cleanup

# The backend conformance kit (tests/backend-conformance) on libkrun, with a network so
# passt is a companion: every check must pass here, none may be skipped.
sc_backend_kit() {
    out="$(boxsock-backend-kit --backend libkrun --home "$(deep_home kit)" --helper-dir "$BIN" \
        --backend-option "read_only=$KRUNFW" --backend-option "agent=$BIN/boxsock-agent" \
        --ready-timeout "$READY_TIMEOUT" --stop-timeout 10 --network)"
    rc=$?
    echo "$out"
    [ $rc -eq 0 ] || fail "the backend kit failed on libkrun: $(echo "$out" | grep -A3 ': FAIL' | head -8 | tr '\n' ' ')"
    echo "$out" | grep -q '^summary pass=6 fail=0 skip=0$' || fail "the backend kit did not pass all six checks: $(echo "$out" | tail -1)"
    echo "$out" | sed -n 's/^check \([a-z_]*\): pass \([0-9]*\)ms$/@@VM metric backend_kit_\1_ms \2/p'
    [ -z "$(passts)" ] || fail "passt left after the kit: $(passts)"
    [ -z "$(shims)" ] || fail "shims left after the kit: $(shims)"
}
# Seven libkrun starts with a network (about 240 s in the TCG host): a longer bound.
sc_timeout_saved="$SC_TIMEOUT"; SC_TIMEOUT=$((SC_TIMEOUT * 2))
run backend-kit sc_backend_kit
SC_TIMEOUT="$sc_timeout_saved"
cleanup

# --- boxsock-oci (issue 23 item 3) ------------------------------------------------------------

# boxsock-oci driven on a bundle exactly as containerd's runc shim drives runc, the box a
# libkrun guest: `vm-bare-launch reap` is the shim's part (a child subreaper that runs
# `create` with the container's stdio, inherits the supervisor whose pid `--pid-file`
# names once `create` exits, and reaps it: its status is the container's). The shim's
# calls, with its global flags (`--root`, deep here; `--log … --log-format json`):
# create --bundle B --pid-file P ID, state, start, state, kill ID 15 (a number, as the
# shim sends it), delete. The short container's output (the guest kernel's release, not
# this TCG host's) reaches the file that was create's stdout, and its status (3)
# reaches the subreaper; the long one streams while running, ends by the signal (143).
OCI_W="$WORK/oci-bundle"
# The shim's --root for the namespace "default" (/run/containerd/runc/default), deep.
OCI_ROOT="$WORK/oci-root"
while [ ${#OCI_ROOT} -lt 200 ]; do OCI_ROOT="$OCI_ROOT/deeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeep"; done
OCI_ROOT="$OCI_ROOT/run/containerd/runc/default"
# The global flags: the shim's, and the libkrun options of this machine (as `bs`).
OCI_ARGS="--root $OCI_ROOT --log $OCI_W/log.json --log-format json --helper-dir $BIN
    --backend-option read_only=$KRUNFW --backend-option agent=$BIN/boxsock-agent
    --ready-timeout $READY_TIMEOUT"
oci() { boxsock-oci $OCI_ARGS "$@"; }
# oci_bundle NAME ARGS_JSON: a bundle as containerd writes one (its default spec's
# process, rlimits, namespaces, masked paths and kernel mounts, its tmpfs at /run), a
# hostname (as CRI sets one), the busybox root at rootfs/, and the annotation that
# picks libkrun.
oci_bundle() {
    b="$OCI_W/$1"; mkdir -p "$b/rootfs/bin" "$b/rootfs/etc" || return 1
    cp "$BUSYBOX" "$b/rootfs/bin/busybox" || return 1
    chroot "$b/rootfs" /bin/busybox --install -s /bin || return 1
    echo 'root:x:0:0:root:/root:/bin/sh' > "$b/rootfs/etc/passwd"
    nx='"nosuid","noexec","nodev"'
    cat > "$b/config.json" <<JSON
{
  "ociVersion": "1.1.0",
  "process": {
    "terminal": false,
    "user": { "uid": 0, "gid": 0 },
    "args": $2,
    "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    "cwd": "/",
    "capabilities": { "bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                      "permitted": ["CAP_KILL"] },
    "rlimits": [ { "type": "RLIMIT_NOFILE", "hard": 777, "soft": 777 } ],
    "noNewPrivileges": true
  },
  "root": { "path": "rootfs", "readonly": false },
  "hostname": "$1",
  "mounts": [
    { "destination": "/proc", "type": "proc", "source": "proc", "options": [$nx] },
    { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
      "options": ["nosuid","strictatime","mode=755","size=65536k"] },
    { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
      "options": ["nosuid","noexec","newinstance","ptmxmode=0666","mode=0620","gid=5"] },
    { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
      "options": [$nx,"mode=1777","size=65536k"] },
    { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": [$nx] },
    { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": [$nx,"ro"] },
    { "destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": [$nx] }
  ],
  "linux": {
    "resources": { "devices": [ { "allow": false, "access": "rwm" } ] },
    "cgroupsPath": "/default/$1",
    "namespaces": [ { "type": "pid" }, { "type": "ipc" }, { "type": "uts" },
                    { "type": "mount" }, { "type": "network" } ],
    "maskedPaths": ["/proc/kcore", "/sys/firmware"],
    "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]
  },
  "annotations": { "io.boxsock.backend": "libkrun" }
}
JSON
}
# oci_fail MSG: fail, after the runtime's log, create's stderr and the boxes' logs.
oci_fail() {
    echo "--- $OCI_W/log.json"; tail -20 "$OCI_W/log.json" 2>/dev/null
    for f in "$OCI_W"/*.err "$OCI_W"/*.reaped; do echo "--- $f"; tail -10 "$f"; done
    for l in "$OCI_ROOT"/home/boxes/*/logs/*; do
        [ -f "$l" ] && { echo "--- $l"; tail -20 "$l"; }
    done
    fail "$1"
}
# oci_create ID: the shim's `create` of bundle ID, its stdio files, under a new
# subreaper (REAPER; its log REAPED); returns when create has. PIDF: the pid file.
oci_create() {
    PIDF="$OCI_W/$1.pid"; REAPED="$OCI_W/$1.reaped"
    vm-bare-launch reap "$REAPED" -- boxsock-oci $OCI_ARGS \
        create --bundle "$OCI_W/$1" --pid-file "$PIDF" "$1" \
        < /dev/null > "$OCI_W/$1.out" 2> "$OCI_W/$1.err" &
    REAPER=$!
    echo "$REAPER" >> "$OCI_W/reapers"
    t0=$(now_ms)
    until grep -q '^child ' "$REAPED" 2>/dev/null; do
        [ $(( $(now_ms) - t0 )) -lt $((READY_TIMEOUT * 1000 + 30000)) ] \
            || oci_fail "create $1 did not return"
        alive "$REAPER" || oci_fail "the subreaper of create $1 ended: $(cat "$REAPED" 2>&1)"
        sleep 0.2
    done
    echo "create $1: returned after $(( $(now_ms) - t0 )) ms"
    echo "@@VM metric oci_create_ms $(( $(now_ms) - t0 ))"
    grep -q '^child [0-9]* exited 0$' "$REAPED" || oci_fail "create $1: $(cat "$REAPED")"
}
# oci_state ID FIELD: one field of `state ID`.
oci_state() { oci state "$1" | json_field "$2"; }
# oci_reaped PID: wait until the subreaper has reaped PID; HOW: how it ended.
oci_reaped() {
    t0=$(now_ms)
    until HOW="$(grep "^reaped $1 " "$REAPED")"; do
        [ $(( $(now_ms) - t0 )) -lt 120000 ] || oci_fail "supervisor $1 not reaped within 120 s"
        sleep 0.2
    done
    HOW="${HOW#reaped $1 }"
    echo "supervisor $1 $HOW, reaped by the engine's subreaper"
}
# oci_procs: the live boxsock-oci processes of this --root.
oci_procs() {
    for p in $(pidof boxsock-oci); do
        alive "$p" && tr '\0' ' ' < "/proc/$p/cmdline" | grep -qF -- "--root $OCI_ROOT " && echo "$p"
    done
}
# oci_gone ID: after delete: state refuses the id, the subreaper has nothing left to
# reap and ends, and no process or file of the container is left.
oci_gone() {
    out="$(oci state "$1" 2>&1)" && fail "state $1 after delete succeeded: $out"
    echo "$out" | grep -q 'does not exist' || fail "state $1 after delete: $out"
    t0=$(now_ms)
    while alive "$REAPER"; do
        if [ $(( $(now_ms) - t0 )) -ge 30000 ]; then
            left="$(for s in /proc/[0-9]*/status; do
                grep -q "^PPid:[[:space:]]*$REAPER\$" "$s" 2>/dev/null \
                    && echo "${s%/status} $(sed -n 's/^Name:[[:space:]]*//p' "$s")"
            done)"
            oci_fail "processes left under the engine's subreaper 30 s after delete $1: $left"
        fi
        sleep 0.2
    done
    wait "$REAPER" || fail "the subreaper of $1 failed: $(cat "$REAPED")"
    [ -z "$(shims)" ] || fail "shims left after delete $1: $(shims)"
    [ -z "$(passts)" ] || fail "passt left after delete $1: $(passts)"
    [ -z "$(oci_procs)" ] || fail "boxsock-oci left after delete $1: $(oci_procs)"
    [ ! -e "$OCI_ROOT/containers/$1" ] || fail "the container's directory is left"
    [ -z "$(ls "$OCI_ROOT/home/boxes" 2>/dev/null)" ] \
        || fail "boxes left in the home: $(ls "$OCI_ROOT/home/boxes")"
}

oci_steps() {
    rm -rf "$OCI_W"; mkdir -p "$OCI_W" "$OCI_ROOT" || fail "mkdir $OCI_W $OCI_ROOT"
    echo "--root: ${#OCI_ROOT} bytes"
    [ ${#OCI_ROOT} -gt 108 ] || fail "--root is only ${#OCI_ROOT} bytes"
    host_kernel="$(uname -r)"

    # A short command: its output on create's stdout and stderr, its status (3).
    oci_bundle oci-short '["/bin/sh", "-c", "uname -r; hostname; ulimit -n; echo on-stderr >&2; exit 3"]' \
        || fail "cannot make the bundle"
    oci_create oci-short
    pid="$(cat "$PIDF")"
    [ "$(oci_state oci-short status)" = created ] || oci_fail "after create: $(oci state oci-short)"
    [ "$(oci_state oci-short pid)" = "$pid" ] \
        || fail "state's pid is not the pid file's ($pid): $(oci state oci-short)"
    ppid="$(sed -n 's/^PPid:[[:space:]]*//p' "/proc/$pid/status")"
    [ "$ppid" = "$REAPER" ] || fail "supervisor $pid has parent $ppid, not the subreaper $REAPER"
    [ "$(shims | wc -l)" -eq 1 ] || fail "a created container has shims '$(shims)', not one"
    box="$(sed -n 's/.*"box_id":"\([^"]*\)".*/\1/p' "$OCI_ROOT/containers/oci-short/state.json")"
    n=0
    for a in $(bs --home "$OCI_ROOT/home" inspect "$box" --json \
        | sed -n 's/.*"address": "\(.*\)".*/\1/p'); do
        echo "box $box socket: $a (${#a} bytes)"
        [ ${#a} -lt 108 ] || fail "socket address $a is ${#a} bytes"
        n=$((n + 1))
    done
    [ $n -ge 1 ] || fail "inspect of box $box shows no socket address"
    oci start oci-short || oci_fail "start failed"
    oci_reaped "$pid"
    [ "$HOW" = "exited 3" ] || oci_fail "the supervisor $HOW; the command exited 3"
    [ "$(oci_state oci-short status)" = stopped ] || fail "after the exit: $(oci state oci-short)"
    [ "$(oci_state oci-short pid)" = 0 ] || fail "a stopped container has a pid: $(oci state oci-short)"
    guest_kernel="$(sed -n 1p "$OCI_W/oci-short.out")"
    guest_name="$(sed -n 2p "$OCI_W/oci-short.out")"
    [ "$guest_name" = oci-short ] \
        || oci_fail "the guest's hostname is '$guest_name', not config.json's oci-short"
    guest_nofile="$(sed -n 3p "$OCI_W/oci-short.out")"
    [ "$guest_nofile" = 777 ] \
        || oci_fail "the command's open-file limit in the guest is '$guest_nofile', not process.rlimits' 777"
    echo "guest kernel: $guest_kernel; TCG host kernel: $host_kernel"
    [ -n "$guest_kernel" ] || oci_fail "nothing reached create's stdout"
    [ "$guest_kernel" != "$host_kernel" ] \
        || fail "uname -r printed the TCG host's kernel: it did not run in a libkrun guest"
    grep -qx on-stderr "$OCI_W/oci-short.err" \
        || fail "create's stderr has no on-stderr: $(cat "$OCI_W/oci-short.err")"
    oci delete oci-short || oci_fail "delete failed"
    oci_gone oci-short

    # A long-running one: it streams while it runs, and kill ends it (143).
    oci_bundle oci-long '["/bin/sh", "-c", "while :; do echo tick; sleep 1; done"]' \
        || fail "cannot make the bundle"
    oci_create oci-long
    pid="$(cat "$PIDF")"
    [ "$(oci_state oci-long status)" = created ] || oci_fail "after create: $(oci state oci-long)"
    oci start oci-long || oci_fail "start failed"
    [ "$(oci_state oci-long status)" = running ] || oci_fail "after start: $(oci state oci-long)"
    [ "$(oci_state oci-long pid)" = "$pid" ] \
        || fail "state's pid is not the pid file's ($pid): $(oci state oci-long)"
    t0=$(now_ms)
    until [ "$(grep -c '^tick$' "$OCI_W/oci-long.out")" -ge 2 ]; do
        [ $(( $(now_ms) - t0 )) -lt 60000 ] \
            || oci_fail "no two ticks on create's stdout within 60 s: $(cat "$OCI_W/oci-long.out")"
        sleep 0.5
    done
    [ "$(oci_state oci-long status)" = running ] || oci_fail "while it ticks: $(oci state oci-long)"
    oci kill oci-long 15 || oci_fail "kill failed"
    oci_reaped "$pid"
    [ "$HOW" = "exited 143" ] || oci_fail "the supervisor $HOW after kill 15; expected exited 143"
    [ "$(oci_state oci-long status)" = stopped ] || fail "after kill: $(oci state oci-long)"
    out="$(oci kill oci-long 15 2>&1)" && fail "kill of a stopped container succeeded"
    echo "$out" | grep -q 'not running' || fail "kill of a stopped container: $out"
    oci delete oci-long || oci_fail "delete failed"
    oci_gone oci-long
    echo "ticks before the kill: $(grep -c '^tick$' "$OCI_W/oci-long.out")"
}
sc_oci_bundle() {
    ( oci_steps ); rc=$?
    if [ $rc -ne 0 ]; then
        for d in "$OCI_ROOT"/containers/*; do
            [ -d "$d" ] && oci delete --force "${d##*/}"
        done
        for r in $(cat "$OCI_W/reapers" 2>/dev/null); do kill "$r" 2>/dev/null; done
    fi
    exit $rc
}
# Two libkrun boots and stops: 15-20 s in the TCG host.
run oci-bundle sc_oci_bundle
