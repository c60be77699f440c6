#!/usr/bin/env bash
# Services, on programs nobody here wrote, against references known to be right:
# 1. Debian's python3 serving HTTP (`python3 -m http.server`), killed with SIGSEGV and restarted by
#    a shell loop RESTARTS times, watched with --exe: the exit bundles' instances and restart
#    counts against the loop's own pids and count.
# 2. Debian's xz compressing with two threads inside a cgroup limited to 1.6 CPUs, watched with
#    --pid: the cpu metric (percent of capacity) against the kernel's own accounting of the
#    cgroup (cpuacct.usage, or cpu.stat's usage_usec on cgroup v2) over the same seconds.
# Usage: sudo scripts/services-vs-reference.sh [RESTARTS=3]
set -euo pipefail
restarts=${1:-3}
cd "$(dirname "$0")/.."
agent=${AUTODUMP_AGENT:-target/release/autodump-agent}
work=$(mktemp -d /tmp/autodump-services.XXXXXX)
python=$(readlink -f /usr/bin/python3)  # Debian's, not a shim earlier in PATH
trap 'kill $(jobs -p) 2>/dev/null || true; rmdir /sys/fs/cgroup/cpu/autodump-xz 2>/dev/null || true' EXIT

echo "== python3 http.server crash loop ($restarts crashes), --exe $python"
"$agent" --exe "$python" --interval 500ms --out "$work/py" > "$work/py.paths" 2> "$work/py.log" &
agent_pid=$!
sleep 2
for i in $(seq "$restarts"); do
  "$python" -m http.server 0 --bind 127.0.0.1 > /dev/null 2>&1 &
  pid=$!
  echo "$pid" >> "$work/py.pids"
  sleep 3
  kill -SEGV "$pid"; wait "$pid" 2>/dev/null || true
done
sleep 2
kill -TERM "$agent_pid"; wait "$agent_pid" || true
python3 - "$work/py.paths" "$work/py.pids" <<'PY'
import json, sys
paths = [l.strip() for l in open(sys.argv[1]) if l.strip().endswith("-exit")]
pids = [int(l) for l in open(sys.argv[2])]
print(f"exit bundles {len(paths)} for {len(pids)} crashes")
for i, (path, pid) in enumerate(zip(paths, pids)):
    s = json.load(open(f"{path}/summary.json"))
    t = s["target"]
    frames = sum(1 for l in open(f"{path}/offcpu.folded") if "_PyEval_EvalFrameDefault" in l)
    print(f"  crash {i + 1}: loop pid {pid}, bundle instance {t['instance']['pid']}, signal {s['exit']['signal']}, "
          f"exits_last_hour {t['exits_last_hour']}, restarts_last_hour {t['restarts_last_hour']}, "
          f"off-CPU stacks through the interpreter {frames}")
PY

echo "== xz -T2 in a 1.6-CPU cgroup (cgroup v1 cpu,cpuacct here)"
cg=/sys/fs/cgroup/cpu/autodump-xz
mkdir -p "$cg"; echo 100000 > "$cg/cpu.cfs_period_us"; echo 160000 > "$cg/cpu.cfs_quota_us"
head -c 2000000000 /dev/zero | xz -T2 -6 > /dev/null &
sleep 0.5
xz_pid=$(pgrep -n -x xz)
echo "$xz_pid" > "$cg/cgroup.procs"
acct=/sys/fs/cgroup/cpuacct/autodump-xz
mkdir -p "$acct"; echo "$xz_pid" > "$acct/cgroup.procs"
sleep 1
u0=$(cat "$acct/cpuacct.usage"); t0=$(date +%s.%N)
"$agent" --pid "$xz_pid" --rule cpu:off --interval 1s --out "$work/xz" > "$work/xz.paths" 2> /dev/null &
agent_pid=$!
sleep 12
kill -USR1 "$agent_pid"; sleep 2
u1=$(cat "$acct/cpuacct.usage"); t1=$(date +%s.%N)
kill -TERM "$agent_pid"; wait "$agent_pid" || true
echo "$xz_pid" > /sys/fs/cgroup/cpuacct/cgroup.procs; rmdir "$acct"
python3 - "$(tail -1 "$work/xz.paths")" "$u0" "$u1" "$t0" "$t1" <<'PY'
import json, sys
path, u0, u1, t0, t1 = sys.argv[1], *map(float, sys.argv[2:])
s = json.load(open(f"{path}/summary.json"))
m = [x for x in s["metrics"] if x.get("cpu_capacity_percent") is not None]
ours = sum(x["cpu_capacity_percent"] for x in m) / len(m)
kernel = (u1 - u0) / 1e9 / (t1 - t0) / 1.6 * 100
print(f"capacity {s['target']['cpu_capacity']}; cpu: ours {ours:.1f}% of capacity over {len(m)} samples, "
      f"cpuacct.usage {kernel:.1f}% of 1.6 CPUs")
PY
