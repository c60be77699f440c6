#!/usr/bin/env bash
# The agent's own CPU and memory while it watches a process: utime+stime per second of wall
# time, and peak RSS (VmHWM), read from /proc.
# Usage: sudo scripts/agent-footprint.sh SECONDS AGENT_ARGS...   (e.g. 300 --pid 1234 --out /tmp/b)
set -euo pipefail
seconds=$1; shift
agent=${AUTODUMP_AGENT:-target/release/autodump-agent}
"$agent" "$@" > /dev/null 2>&1 &
pid=$!
sleep 2 # start-up (loading the probes) is not steady state
ticks=$(getconf CLK_TCK)
read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
sleep "$seconds"
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
kill -TERM "$pid"; wait "$pid" || true
python3 -c "
cpu = (($u1 + $s1) - ($u0 + $s0)) / $ticks
print(f'agent CPU: {cpu:.2f} s over $seconds s = {100 * cpu / $seconds:.2f}% of one core')
print(f'agent RSS: {$rss / 1024:.1f} MiB now, {$hwm / 1024:.1f} MiB peak')"
