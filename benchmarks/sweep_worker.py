"""What does the sweep's worker save? The same sweep run three ways, side by side.

* ``process-per-cell``  ``--process-per-cell``: a fresh ``lm-eval-ruler run`` process per cell
* ``worker``            the default: one worker process runs the cells in turn
* ``worker+model``      the worker with ``--window model``: one vLLM engine for all lengths

Each mode sweeps the same model, lengths, tasks and samples into its own folder, from one shared
dataset cache filled beforehand (so data generation is not timed), and reports the sweep's wall
time, each cell's wall time (``cell.json``), the ratio to ``process-per-cell``, and whether every
sample got the same answer as in ``process-per-cell`` (``gpu_study/same_answers.py``).

    python benchmarks/sweep_worker.py --tokenizer PATH                       # dummy backend, no model
    python benchmarks/sweep_worker.py --backend vllm --model PATH --python VLLM_PYTHON \\
        --model-arg dtype=float32 --model-arg enforce_eager=True --lengths 1k,2k --samples 2

With the dummy backend there is no engine, so ``worker+model`` is skipped; the cells measure what
every cell pays besides the model (imports, lm-eval set-up, data, saving).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from lm_eval_ruler.sweep import SweepConfig, run_sweep
from lm_eval_ruler.sweep.run import Sweep

MODES: dict[str, dict[str, Any]] = {
    "process-per-cell": {"process_per_cell": True},
    "worker": {},
    "worker+model": {"window": "model"},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="dummy", choices=("dummy", "hf", "vllm"))
    parser.add_argument("--model", default="dummy-model", help="what lm-eval loads (any name for dummy)")
    parser.add_argument("--tokenizer", help="the tokenizer that sizes the data (required for dummy)")
    parser.add_argument("--python", default=sys.executable, help="the cells' interpreter (one with vLLM for --backend vllm)")
    parser.add_argument("--model-arg", action="append", default=[], help="KEY=VALUE for every cell (repeatable)")
    parser.add_argument("--lengths", default="1k,2k,4k")
    parser.add_argument("--tasks", default="niah_single_1,niah_multikey_2,vt")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("/tmp/sweep-worker-bench"))
    args = parser.parse_args()
    if args.backend == "dummy" and not args.tokenizer:
        parser.error("the dummy backend needs --tokenizer (a local tokenizer folder or hub name)")
    model_args: dict[str, Any] = dict(arg.split("=", 1) for arg in args.model_arg)
    if args.tokenizer:
        model_args["tokenizer"] = args.tokenizer
    modes = [mode for mode in MODES if args.backend != "dummy" or mode != "worker+model"]
    common = {
        "lengths": tuple(args.lengths.split(",")), "tasks": tuple(args.tasks.split(",")), "backend": args.backend,
        "num_samples": args.samples, "model_args": model_args, "cache_dir": args.out / "cache", "python": args.python,
        "apply_chat_template": args.backend != "dummy", "progress": False, "report": False,
    }  # fmt: skip
    filling = Sweep(SweepConfig(models=(f"data={args.model}",), output=args.out / "data", process_per_cell=True, **common), None)
    filling.check()
    filling.prepare_pending()  # every mode then reads the datasets from the cache
    walls: dict[str, float] = {}
    cells: dict[str, list[float]] = {}
    for mode in modes:
        output = args.out / mode
        started = time.perf_counter()
        result = run_sweep(SweepConfig(models=(f"{mode}={args.model}",), output=output, **common, **MODES[mode]))
        walls[mode] = time.perf_counter() - started
        if not result.ok:
            print(f"{mode}: failed cells {[cell.length for cell in result.failed]}", file=sys.stderr)
            return 1
        cells[mode] = [json.loads(path.read_text())["seconds"] for path in sorted(output.glob("*/*/cell.json"))]
    sys.path.insert(0, str(HERE / "gpu_study"))
    import same_answers
    base = "process-per-cell"
    print(f"\n{args.backend} backend, {args.model}, lengths {args.lengths}, {len(common['tasks'])} tasks x {args.samples} samples\n")
    print("| mode | sweep wall | cells (s) | vs process-per-cell | same answers |")
    print("|---|---|---|---|---|")
    for mode in modes:
        same = "-" if mode == base else ("yes" if same_answers.compare(args.out / base, args.out / mode)[1] else "NO")
        print(f"| {mode} | {walls[mode]:.1f} s | {', '.join(f'{s:.1f}' for s in cells[mode])} | "
              f"{walls[mode] / walls[base]:.2f}x | {same} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
