#!/usr/bin/env bash
# Re-records the golden sessions in testdata/sessions/ through the live
# gateway, against the real MCP servers and testdata/test-upstream.
#
#   testdata/record-sessions.sh                 # every session
#   testdata/record-sessions.sh blocked-calls   # only these
#
# Each session directory holds config.yaml (the gateway's config) and
# client.script (what testdata/test-upstream's session-client sends and waits
# for; a line `# runtime: smol` records with that runtime). This script runs
#
#   session-client client.script -- gatekit --config config.yaml --capture capture.jsonl
#
# from the repository root (the configs' upstream commands are relative to
# it), keeps the audit files the live gateway wrote as audit.expected/, and
# then rewrites the expected transcripts (UPDATE_GOLDEN=1). Timestamps, pids
# and anything random the servers say differ on every recording: re-record
# only on purpose, and review every changed file before committing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

cargo build -p gatekit -p gatekit-test-upstream
if [ ! -d testdata/node_modules/@modelcontextprotocol/server-filesystem ]; then
    npm ci --prefix testdata --no-audit --no-fund
fi

# Fixed paths, so the servers' answers (which name them) stay the same.
work=/tmp/gatekit-sessions
reset_files() {
    rm -rf "$work"
    mkdir -p "$work/sandbox/projects" "$work/large"
    echo "Hello from the sandbox!" > "$work/sandbox/readme.txt"
    echo "Project info" > "$work/sandbox/projects/info.txt"
    # 1 MB of text, the same every time; the filesystem server's answer
    # carries it twice (content and structuredContent): a 2 MB message.
    awk 'BEGIN { for (i = 1; i <= 15000; i++) printf "line %05d: the quick brown fox jumps over the lazy dog 0123456789\n", i }' \
        > "$work/large/big.txt"
}

if [ $# -gt 0 ]; then
    sessions=("$@")
else
    sessions=()
    for dir in testdata/sessions/*/; do
        sessions+=("$(basename "$dir")")
    done
fi

for name in "${sessions[@]}"; do
    dir=testdata/sessions/$name
    if [ ! -f "$dir/client.script" ]; then
        echo "skipping $name: no client.script" >&2
        continue
    fi
    runtime=$(sed -n 's/^# runtime: *//p' "$dir/client.script")
    runtime_args=()
    if [ -n "$runtime" ]; then
        runtime_args=(--runtime "$runtime")
    fi
    echo "recording $name ${runtime:+(runtime $runtime)}" >&2
    reset_files
    rm -rf "$dir/capture.jsonl" "$dir/logs" "$dir/audit.expected"
    "$root/target/debug/session-client" "$dir/client.script" -- \
        "$root/target/debug/gatekit" --config "$dir/config.yaml" \
        --capture "$dir/capture.jsonl" "${runtime_args[@]}" \
        2> "$work/$name.stderr" || {
            echo "recording $name failed; its stderr:" >&2
            cat "$work/$name.stderr" >&2
            exit 1
        }
    if [ -d "$dir/logs" ]; then
        mv "$dir/logs" "$dir/audit.expected"
    fi
done

UPDATE_GOLDEN=1 cargo test -p gatekit --test golden
echo "Recorded. Review every changed file: git diff --stat testdata/sessions" >&2
