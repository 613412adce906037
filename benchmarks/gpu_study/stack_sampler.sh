#!/usr/bin/env bash
# Sample the Python stacks of every process running sweep cells (`python -m lm_eval_ruler run ...` or the
# sweep's worker, `python -m lm_eval_ruler._cell_worker`; not their children, e.g. vLLM's engine) once a second
# with py-spy, each dump under a `=== <unix time> pid <pid>` line, until killed. There is no perf,
# strace or gdb on the GPU machine; a timeline of stacks shows where a cell's silent minutes go.
#   bash benchmarks/gpu_study/stack_sampler.sh "$OUT/stacks.txt" & sampler=$!; ...; kill $sampler
set -u
out=$1
: > "$out"
while true; do
  pids=" $(pgrep -f "lm_eval_ruler run|lm_eval_ruler._cell_worker" | tr '\n' ' ')"
  for pid in $pids; do
    case "$pids" in *" $(ps -o ppid= -p "$pid" | tr -d ' ') "*) continue ;; esac
    echo "=== $(date +%s.%N) pid $pid" >> "$out"
    timeout 10 py-spy dump --pid "$pid" >> "$out" 2>&1
  done
  sleep 1
done
