#!/usr/bin/env bash
# Detection latency and reach of a watch bundle at the agent's defaults: a fixture idles at ~3% of
# a core for CALM seconds, then spins a full core (tests/fixtures/misbehave.c, mode cpu). Prints,
# per run, how long after the spike began the cpu rule fired and how far the bundle reaches
# before and after the spike.
# Usage: sudo scripts/detection-latency.sh [RUNS=3] [CALM=40] [AGENT_ARGS...]
set -euo pipefail
runs=${1:-3}; calm=${2:-40}; shift $(( $# < 2 ? $# : 2 ))
cd "$(dirname "$0")/.."
agent=${AUTODUMP_AGENT:-target/release/autodump-agent}
work=$(mktemp -d /tmp/autodump-latency.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
gcc -O2 -g -fno-omit-frame-pointer -pthread -o "$work/misbehave" tests/fixtures/misbehave.c
for run in $(seq 1 "$runs"); do
  out="$work/run$run"; mkdir -p "$out"
  "$work/misbehave" cpu "$calm" > "$out/fixture.txt" &
  fixture=$!
  "$agent" --pid "$fixture" --out "$out" "$@" > "$out/bundles.txt" 2> "$out/agent.log" &
  agent_pid=$!
  for _ in $(seq 1 $(( calm + 60 ))); do [ -s "$out/bundles.txt" ] && break; sleep 1; done
  kill -TERM "$agent_pid"; wait "$agent_pid" || true
  kill "$fixture"; wait "$fixture" 2>/dev/null || true
  bundle=$(tail -1 "$out/bundles.txt")
  [ -n "$bundle" ] || { echo "run $run: no bundle (log: $out/agent.log)"; continue; }
  spike=$(awk '/^start/ {print $2}' "$out/fixture.txt")
  python3 - "$bundle/summary.json" "$spike" "$run" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); spike = float(sys.argv[2]); w = s["window"]; r = s["reason"]
print(f"run {sys.argv[3]}: {r['metric']} rule fired {w['trigger'] - spike:.2f} s after the spike began "
      f"({r['value']:.0f}% against a mean of {r['baseline_mean']:.1f}%); the bundle reaches from "
      f"{spike - w['start']:.1f} s before the spike to {w['end'] - spike:.1f} s after it")
PY
done
echo "bundles and logs: $work"
