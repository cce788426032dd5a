#!/usr/bin/env bash
# One line: what the last test run skipped and why, from the records every skip writes
# (boxsock-test-support: one `<label>\t<test>\t<detail>\t<file:line>` file per skip).
# Usage: scripts/skips-summary.sh [DIR]   (default: $BOXSOCK_SKIP_DIR, else target/boxsock-skips)
set -uo pipefail
dir="${1:-${BOXSOCK_SKIP_DIR:-target/boxsock-skips}}"
shopt -s nullglob
files=("$dir"/*.skip)
if [ ${#files[@]} -eq 0 ]; then
    echo "skipped: 0"
    exit 0
fi
cat -- "${files[@]}" | awk -F'\t' '
    NF { n++; c[$1]++ }
    END {
        s = ""
        # Most frequent first; ties by label.
        m = 0; for (k in c) keys[++m] = k
        for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++)
            if (c[keys[j]] > c[keys[i]] || (c[keys[j]] == c[keys[i]] && keys[j] < keys[i])) {
                t = keys[i]; keys[i] = keys[j]; keys[j] = t
            }
        for (i = 1; i <= m; i++) s = s (i > 1 ? ", " : "") keys[i] ": " c[keys[i]]
        printf "skipped: %d (%s)\n", n, s
    }'
