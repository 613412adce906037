#!/usr/bin/env bash
# Where a sweep cell's wall time goes, and what the sweep's worker and one engine per model change.
# On the GPU machine, after install.sh and `source benchmarks/gpu_study/env.sh`:
#
#   bash benchmarks/gpu_study/overhead.sh OUT STEP...
#
# Steps (each a sweep of SmolLM2 bf16 x the 11 non-QA tasks x 500 samples, eager, sampled by
# stack_sampler.sh into OUT/stacks-STEP.txt; a finished step is skipped when run again):
#   model     the bf16 checkpoint from the bundle's GGUF, and the essay corpus into the cache
#   tight     4k,8k in the worker, each cell its own window (its longest prompt + answer): the
#             default; the 4k cell is a worker's first, the 8k cell builds a second engine in
#             the same process after the first was shut down
#   shared    4k,8k in the worker, --window model (one 8K engine for both lengths: the 8k cell
#             shows a cell of a worker whose engine is already loaded)
#   percell   4k with --process-per-cell (a fresh process per cell, as before the worker)
#   report    OUT/overhead.md: each step's phase table, and whether tight and shared gave the same
#             answer to every sample (at 4k the larger window must not change results)
set -u
OUT=${1:?usage: overhead.sh OUT STEP...}
shift
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
MODEL=$OUT/models/bf16
TASKS=niah_single_1,niah_single_2,niah_single_3,niah_multikey_1,niah_multikey_2,niah_multikey_3,niah_multivalue,niah_multiquery,vt,cwe,fwe
export LM_EVAL_RULER_CACHE=$OUT/cache
mkdir -p "$OUT"

sweep() {  # sweep NAME LENGTHS EXTRA...: one sampled sweep into OUT/NAME
  local name=$1 lengths=$2
  shift 2
  [ -f "$OUT/$name.done" ] && { echo "$name: done earlier"; return 0; }
  setsid bash "$HERE/stack_sampler.sh" "$OUT/stacks-$name.txt" > /dev/null 2>&1 &
  local started=$SECONDS
  (cd "$REPO" && python3 -m lm_eval_ruler sweep --model "$name=$MODEL" --lengths "$lengths" --tasks "$TASKS" \
    --num-samples 500 --model-arg enforce_eager=True --model-arg dtype=bfloat16 --output "$OUT/$name" \
    --no-progress --no-report "$@" > "$OUT/$name.log" 2>&1)
  local code=$?
  pkill -f "stack_sample[r].sh $OUT/stacks-$name.txt"
  echo "$name: exit $code in $((SECONDS - started)) s"
  [ $code -eq 0 ] && touch "$OUT/$name.done"
  grep -h '"seconds"' "$OUT/$name"/*/*/cell.json
}

for step in "$@"; do
  case $step in
    model)
      [ -d "$MODEL" ] || python3 "$HERE/build_model.py" --gguf "$(ls "$GPU_STUDY_BUNDLE"/model/*.gguf | head -1)" --out "$MODEL"
      python3 -m lm_eval_ruler data import "$GPU_STUDY_BUNDLE/data" ;;
    tight) sweep tight 4k,8k ;;
    shared) sweep shared 4k,8k --window model ;;
    percell) sweep percell 4k --process-per-cell ;;
    report)
      {
        for name in tight shared percell; do
          [ -f "$OUT/stacks-$name.txt" ] || continue
          echo "## $name"; echo
          python3 "$HERE/phases.py" "$OUT/stacks-$name.txt" --sweep "$OUT/$name"; echo
        done
        if [ -d "$OUT/tight" ] && [ -d "$OUT/shared" ]; then
          echo "## tight vs shared, sample by sample"; echo
          python3 "$HERE/same_answers.py" "$OUT/tight" "$OUT/shared"
        fi
      } > "$OUT/overhead.md"
      cat "$OUT/overhead.md" ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
done
