#!/usr/bin/env bash
# Prints the probes' own cost from the kernel's accounting while an agent records a target.
# Usage: sudo scripts/probe-cost.sh AGENT_ARGS...   (e.g. --pid 1234 --duration 10s --out /tmp/b)
# Needs bpftool (Debian package bpftool). Restores kernel.bpf_stats_enabled afterwards.
set -euo pipefail
agent=${AUTODUMP_AGENT:-target/release/autodump-agent}
previous=$(sysctl -n kernel.bpf_stats_enabled)
trap 'sysctl -qw kernel.bpf_stats_enabled="$previous"' EXIT
sysctl -qw kernel.bpf_stats_enabled=1
"$agent" "$@" &
agent_pid=$!
sleep "${SETTLE_SECONDS:-1}"
snapshot() { bpftool prog show --json | python3 -c '
import json, sys
for p in json.load(sys.stdin):
    if p.get("name") in ("on_cpu_sample", "sched_switch"):
        print(p["name"], p.get("run_time_ns", 0), p.get("run_cnt", 0))'; }
before=$(snapshot)
wait_seconds=${MEASURE_SECONDS:-5}
sleep "$wait_seconds"
after=$(snapshot)
wait "$agent_pid" > /dev/null || true
python3 - "$before" "$after" <<'PY'
import sys
def parse(text):
    out = {}
    for line in text.strip().splitlines():
        name, ns, cnt = line.split()
        a = out.setdefault(name, [0, 0]); a[0] += int(ns); a[1] += int(cnt)
    return out
b, a = parse(sys.argv[1]), parse(sys.argv[2])
for name in sorted(a):
    ns = a[name][0] - b.get(name, [0, 0])[0]; cnt = a[name][1] - b.get(name, [0, 0])[1]
    print(f"{name}: {cnt} runs, {ns} ns, {ns / cnt if cnt else 0:.0f} ns per run")
PY
