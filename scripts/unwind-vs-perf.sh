#!/usr/bin/env bash
# Whole stacks on distribution binaries without frame pointers, ours against `perf record
# --call-graph dwarf` on the same process over the same seconds: the share of on-CPU samples whose
# stack reaches main (__libc_start_call_main) or a thread's start (start_thread), and the mean
# depth. Targets: Debian's gzip -9 compressing text-like data from a pipe, and python3 hashing and
# encoding JSON. Either setting of the agent can be compared: pass AGENT_ARGS (e.g. --unwind
# frame-pointers).
# Usage: sudo scripts/unwind-vs-perf.sh [SECONDS=8] [AGENT_ARGS...]
set -euo pipefail
seconds=${1:-8}; shift $(( $# < 1 ? $# : 1 ))
agent_args=("$@")
cd "$(dirname "$0")/.."
agent=${AUTODUMP_AGENT:-target/release/autodump-agent}
work=$(mktemp -d /tmp/autodump-unwind.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

measure() { # NAME PID
  local name=$1 pid=$2
  perf record -q --call-graph dwarf,65528 -F 99 -p "$pid" -o "$work/$name.data" -- sleep "$seconds" > /dev/null 2>&1 &
  local perf=$!
  "$agent" --pid "$pid" --duration "${seconds}s" --out "$work/$name" "${agent_args[@]}" > "$work/$name.path" 2> /dev/null
  wait "$perf"
  perf script --no-inline -F comm,ip,sym -i "$work/$name.data" > "$work/$name.perf" 2> /dev/null
  python3 - "$name" "$(cat "$work/$name.path")/cpu.folded" "$work/$name.perf" <<'PY'
import sys
name, folded, script = sys.argv[1:]
roots = {"__libc_start_call_main", "start_thread"}
def summary(stacks):  # [(frames root first, weight)]
    total = sum(w for _, w in stacks) or 1
    root = sum(w for f, w in stacks if roots & set(f)) / total
    user = lambda f: [x for x in f if not x.endswith("_[k]")]
    depth = sum(w * len(user(f)) for f, w in stacks) / total
    return root, depth, total
ours = []
for line in open(folded):
    stack, w = line.rsplit(" ", 1)
    ours.append((stack.split(";")[1:], int(w)))  # the thread name first
perf, cur = [], None
for line in open(script):
    if not line.strip():
        if cur is not None: perf.append((cur[::-1], 1)); cur = None
    elif line[0].isspace():
        cur.append(" ".join(line.split()[1:]))
    else:
        cur = []
if cur: perf.append((cur[::-1], 1))
for who, s in (("ours", ours), ("perf --call-graph dwarf", perf)):
    root, depth, n = summary(s)
    print(f"{name:8} {who:24} reaching main/thread start {100 * root:5.1f}%  mean depth {depth:5.1f}  ({n} samples)")
PY
}

head -c $((4 << 20)) /dev/urandom | base64 -w 0 > "$work/text"
( while cat "$work/text"; do :; done ) | gzip -9 -c > /dev/null &
sleep 1
measure gzip "$(pgrep -n -x gzip)"
kill %1 2> /dev/null || true

python3 -c '
import hashlib, json
while True: json.dumps([hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)])' &
py=$!
sleep 1
measure python3 "$py"
kill "$py"
