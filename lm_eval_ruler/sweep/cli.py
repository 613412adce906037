"""``lm-eval-ruler sweep`` (and ``python -m lm_eval_ruler.sweep``): the command line of the sweep."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from .._tasks import DEFAULT_NUM_SAMPLES, DEFAULT_PROFILE, DEFAULT_SEED, PROFILES, STANDARD_LENGTHS
from .config import BACKENDS, SERVER_OPTIONS, WINDOW_POLICIES, SweepConfig, parse_model_args, parse_model_options, parse_shard
from .run import run_sweep
from .slurm import add_slurm_arguments, run_slurm, slurm_options

# --------------------------------------------------------------------------------------------
# command line

DESCRIPTION = """\
Evaluate models x lengths, one lm-eval run per cell, resumable and shardable.

Each cell (model, length) runs `lm-eval-ruler run` with all requested tasks at that length and
writes OUTPUT/<model>/<length>/ (lm-eval results, samples, cell.json, manifest.json, lm_eval.log).
The cells run in turn in one worker process that imports lm-eval and vLLM once; with
--window model one vLLM engine serves all lengths of a model (--process-per-cell: a process each).
Rerunning the same command skips finished cells and reruns failed or interrupted ones.
With --slurm the cells become one Slurm job array (one task per cell, data generated first,
here) and a report job after it; rerunning that command submits only the unfinished cells.
"""

EXAMPLES = """\
examples:
  lm-eval-ruler sweep --model meta-llama/Llama-3.1-8B-Instruct \\
      --model RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8-dynamic --lengths 4k,8k,16k,32k,64k,128k \\
      --output results/ruler --tensor-parallel-size 2 --gpu-memory-utilization 0.9
  lm-eval-ruler sweep --model bf16=meta-llama/Llama-3.1-8B-Instruct \\
      --model fp8=meta-llama/Llama-3.1-8B-Instruct --model-option fp8:quantization=fp8 --lengths 4k,8k
                                               # one checkpoint, two labels: bf16 and online FP8
  lm-eval-ruler sweep ... --shard 0/4          # on four nodes: --shard 0/4 ... 3/4, same --output
  lm-eval-ruler sweep ... --dry-run            # print the lm-eval commands, run nothing
  lm-eval-ruler sweep ... --slurm --slurm-option partition=gpu --slurm-option time=04:00:00 --submit
                                               # one Slurm array task per cell, then OUTPUT/slurm/report.md
  lm-eval-ruler sweep --model my-served-name --base-url http://localhost:8000/v1/completions \\
      --tokenizer meta-llama/Llama-3.1-8B-Instruct --num-concurrent 16 --lengths 4k,8k
                                               # server mode: the window comes from the server
"""


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the sweep's options to ``parser`` (used by ``lm-eval-ruler sweep``)."""
    grid = parser.add_argument_group("grid")
    grid.add_argument("--model", dest="models", action="append", required=True, metavar="[LABEL=]NAME_OR_PATH",
                      help="model to evaluate; repeat for more (the first is the baseline). LABEL names its folder "
                      "and its run in reports, so one checkpoint can run under several labels")
    grid.add_argument("--lengths", default=",".join(STANDARD_LENGTHS),
                      help=f"comma-separated lengths (default {','.join(STANDARD_LENGTHS)}); 1k 2k ... 1m, or a token count")
    grid.add_argument("--tasks", default="all", help="comma-separated RULER task names (default: all 13)")
    grid.add_argument("--num-samples", type=int, default=DEFAULT_NUM_SAMPLES, help=f"samples per task and length (default {DEFAULT_NUM_SAMPLES})")
    grid.add_argument("--apply-chat-template", action=argparse.BooleanOptionalAction, default=True,
                      help="render with the tokenizer's chat template (default: on)")
    grid.add_argument("--system-instruction", help="system instruction (budgeted into the prompts)")
    grid.add_argument("--profile", default=DEFAULT_PROFILE, choices=PROFILES, help="RULER code profile")
    grid.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"RULER data seed (default {DEFAULT_SEED})")
    grid.add_argument("--output", default="ruler-sweep", help="output folder shared by all shards (default ./ruler-sweep)")

    backend = parser.add_argument_group("backend")
    backend.add_argument("--backend", choices=BACKENDS, default=None, help="lm-eval model backend (default vllm)")
    backend.add_argument("--base-url", help="server mode: OpenAI-compatible completions URL (backend local-completions), "
                         "e.g. http://localhost:8000/v1/completions; --model is the served name, and the window is the "
                         "server's max_model_len (GET <server>/v1/models) unless --max-window is given")
    backend.add_argument("--tokenizer", help="tokenizer that sizes the prompts (default: the model's own; in server mode "
                         "the served model's path from /v1/models if it loads here, else its served name)")
    backend.add_argument("--num-concurrent", type=int, metavar="N",
                         help=f"server mode: parallel requests (default {SERVER_OPTIONS['num_concurrent'][1]})")
    backend.add_argument("--max-retries", type=int, metavar="N",
                         help=f"server mode: attempts per request before the cell fails (default {SERVER_OPTIONS['max_retries'][1]})")
    backend.add_argument("--request-timeout", type=int, metavar="SECONDS",
                         help=f"server mode: seconds per request (default {SERVER_OPTIONS['request_timeout'][1]}; "
                         "long prompts on a busy server need minutes)")
    backend.add_argument("--tensor-parallel-size", type=int)
    backend.add_argument("--data-parallel-size", type=int)
    backend.add_argument("--gpu-memory-utilization", type=float)
    backend.add_argument("--kv-cache-dtype", help="e.g. fp8")
    backend.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=None)
    backend.add_argument("--quantization", help="vLLM quantization method (quantized checkpoints are usually auto-detected)")
    backend.add_argument("--hf-overrides", metavar="JSON",
                         help='vLLM hf_overrides, e.g. \'{"rope_scaling": {"rope_type": "yarn", ...}}\'')
    backend.add_argument("--model-arg", dest="model_arg", action="append", default=[], metavar="KEY=VALUE",
                         help="any other model arg, for every model (repeatable), e.g. dtype=bfloat16, tokenizer=...")
    backend.add_argument("--model-option", dest="model_option", action="append", default=[], metavar="LABEL:KEY=VALUE",
                         help="a model arg for the model labelled LABEL only, over --model-arg (repeatable), "
                         "e.g. fp8:quantization=fp8")
    backend.add_argument("--batch-size", help="lm-eval --batch_size (default auto for vllm)")
    backend.add_argument("--device", help="lm-eval --device (e.g. cpu for the hf backend without a GPU)")
    backend.add_argument("--lm-eval-args", default="", help="extra lm-eval arguments for every cell, as one quoted string")

    run = parser.add_argument_group("running")
    run.add_argument("--max-window", help="the served window: refuse longer lengths (default: read the model's config.json)")
    run.add_argument("--window", choices=WINDOW_POLICIES, default="tight",
                     help="max_model_len/max_length per cell: the longest prompt + answer (tight, default), the length, "
                     "or per model (the largest tight window of its lengths: one vLLM engine for all of them)")
    run.add_argument("--shard", default="0/1", help="i/n: run only the cells with index %% n == i")
    run.add_argument("--dry-run", action="store_true",
                     help="print the commands; run nothing (uses cached data to size windows, generates none)")
    run.add_argument("--replace", action="store_true",
                     help="cells in --output made with other settings (samples, tasks, seed, model args ...) are moved "
                     "to OUTPUT/.replaced/<time>/ and run again; without it the sweep refuses to mix them")
    run.add_argument("--cache-dir", help="plugin cache (default $LM_EVAL_RULER_CACHE or ~/.cache/lm-eval-ruler)")
    run.add_argument("--offline", action="store_true", help="never download data files")
    run.add_argument("--log-samples", action=argparse.BooleanOptionalAction, default=True,
                     help="lm-eval --log_samples (default on)")
    run.add_argument("--cell-timeout", type=float, help="kill a cell after this many seconds (it is marked failed)")
    run.add_argument("--process-per-cell", action="store_true",
                     help="a fresh lm-eval process per cell; by default one worker process runs the cells in turn, "
                     "importing lm-eval and vLLM once and keeping a vLLM engine while cells ask for the same one")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    run.add_argument("--no-report", dest="report", action="store_false", help="do not print the table at the end")
    add_slurm_arguments(parser)
    parser.description = parser.description or DESCRIPTION
    parser.epilog = parser.epilog or EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    def split(text: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in text.split(",") if part.strip())

    tasks = split(args.tasks)
    return SweepConfig(
        models=tuple(args.models),
        lengths=split(args.lengths),
        tasks=None if tasks in ((), ("all",)) else tasks,
        backend=args.backend,
        output=args.output,
        num_samples=args.num_samples,
        apply_chat_template=args.apply_chat_template,
        system_instruction=args.system_instruction,
        profile=args.profile,
        seed=args.seed,
        tensor_parallel_size=args.tensor_parallel_size,
        data_parallel_size=args.data_parallel_size,
        gpu_memory_utilization=args.gpu_memory_utilization,
        kv_cache_dtype=args.kv_cache_dtype,
        enable_prefix_caching=args.enable_prefix_caching,
        quantization=args.quantization,
        hf_overrides=args.hf_overrides,
        model_args=parse_model_args(args.model_arg),
        model_options=parse_model_options(args.model_option),
        base_url=args.base_url,
        tokenizer=args.tokenizer,
        num_concurrent=args.num_concurrent,
        max_retries=args.max_retries,
        request_timeout=args.request_timeout,
        batch_size=args.batch_size,
        device=args.device,
        shard=parse_shard(args.shard),
        dry_run=args.dry_run,
        max_window=args.max_window,
        window=args.window,
        cache_dir=args.cache_dir,
        offline=args.offline,
        log_samples=args.log_samples,
        cell_timeout=args.cell_timeout,
        process_per_cell=args.process_per_cell,
        lm_eval_args=tuple(shlex.split(args.lm_eval_args)),
        progress=args.progress,
        report=args.report,
        replace=args.replace,
    )


def run_command(args: argparse.Namespace) -> int:
    """``lm-eval-ruler sweep``: 0 when every cell of this shard is done (with --slurm: written or submitted), 1 if any
    failed, 130 if interrupted."""
    try:
        slurm = slurm_options(args)
        if slurm is not None:
            return run_slurm(config_from_args(args), args, slurm)
        result = run_sweep(config_from_args(args))
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue where it stopped", file=sys.stderr)
        return 130
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lm_eval_ruler.sweep ...`` (the same as ``lm-eval-ruler sweep ...``)."""
    from ..errors import run_reporting_errors

    args = add_arguments(argparse.ArgumentParser(prog="lm-eval-ruler sweep")).parse_args(argv)
    return run_reporting_errors(lambda: run_command(args))


