"""The ``lm-eval-ruler`` command: lm-eval's own CLI with RULER tasks, plus data tools.

Anything that is not one of our subcommands goes to lm-eval unchanged, so
``lm-eval-ruler run --model vllm ... --tasks ruler_niah_64k`` behaves exactly
like ``lm_eval run`` with this plugin's tasks registered.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from ._report_cli import REPORT_COMMANDS, add_report_commands

OWN_COMMANDS = ("data", "cache", "generate", "include-path", "sweep", *REPORT_COMMANDS)

EPILOG = """\
Evaluate (everything not listed above is passed to lm-eval's CLI):
  lm-eval-ruler run --model vllm \\
      --model_args pretrained=meta-llama/Llama-3.1-8B-Instruct,max_model_len=65536 \\
      --tasks ruler_64k --apply_chat_template --batch_size auto --output_path results
  lm-eval-ruler ls tasks            # lm-eval's listing, with the ruler_* tasks

Tasks are ruler_<task>_<length> (e.g. ruler_niah_single_1_4k), groups ruler_<length>,
ruler_niah_<length>, ruler_aggregation_<length>, ruler_qa_<length>, and ruler_suite
(4k..128k, RULER's "Avg"). Lengths: 1k 2k 4k 8k 16k 32k 64k 128k 256k 512k 1m, or
*_custom with --metadata ruler_custom_length=<tokens>.

Report and gate (scores 0-100, recovery with confidence intervals):
  lm-eval-ruler report results/Llama-3.1-8B-Instruct --format markdown --plots plots/
  lm-eval-ruler compare --baseline results/base --candidate results/fp8 --min-recovery 99 --lengths 4k..64k

Air-gapped machines:
  lm-eval-ruler data download        # on a machine with network, once
  lm-eval-ruler data import DIR      # on the target machine: copies and verifies
"""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lm-eval-ruler",
        description="RULER long-context benchmark for lm-evaluation-harness: run evaluations, manage data and caches.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(
        dest="command", metavar="{run,ls,validate,data,cache,generate,sweep,report,compare,include-path}"
    )
    data = commands.add_parser("data", help="download, check or import the essay/SQuAD/HotpotQA files")
    data_commands = data.add_subparsers(dest="action", required=True)
    download = data_commands.add_parser("download", help="fetch files (all, or the named ones), verify their sha256")
    download.add_argument("names", nargs="*", help="essays, squad, hotpotqa (default: all)")
    download.add_argument("--cache-dir", help="cache directory (default: $LM_EVAL_RULER_CACHE or ~/.cache/lm-eval-ruler)")
    status = data_commands.add_parser("status", help="show which files are present and verified")
    status.add_argument("--cache-dir")
    import_ = data_commands.add_parser("import", help="copy files you downloaded elsewhere into the cache, verifying them")
    import_.add_argument("paths", nargs="+", help="files or directories")
    import_.add_argument("--cache-dir")

    cache = commands.add_parser("cache", help="list or clear generated datasets")
    cache_commands = cache.add_subparsers(dest="action", required=True)
    for name, text in (("ls", "list cached datasets"), ("clear", "delete every cached dataset")):
        sub = cache_commands.add_parser(name, help=text)
        sub.add_argument("--cache-dir")

    generate = commands.add_parser(
        "generate",
        help="generate datasets into the cache ahead of a run (e.g. on a CPU node before a GPU job)",
    )
    generate.add_argument("--tokenizer", required=True, help="the evaluated model's tokenizer (path or model id)")
    generate.add_argument("--tasks", default="all", help="comma-separated RULER task names (default: all 13)")
    generate.add_argument("--lengths", default="4k", help="comma-separated lengths, e.g. 4k,8k,100000")
    generate.add_argument("--num-samples", type=int, default=500)
    generate.add_argument("--profile", default="reference", choices=("reference", "2024"))
    generate.add_argument("--seed", type=int, default=42)
    generate.add_argument("--apply-chat-template", choices=("true", "false", "both"), default="both",
                          help="size for the rendering your run will use (default: fit both)")
    generate.add_argument("--data-file", action="append", default=[], metavar="NAME=PATH",
                          help="use a local essays/squad/hotpotqa file instead of the pinned download "
                          "(the ruler_<name>_file metadata of a run); repeatable")
    generate.add_argument("--jobs", type=int, default=1,
                          help="worker processes, one task-length at a time each, longest first (default: 1; "
                          "use the number of cores for the whole suite)")
    generate.add_argument("--cache-dir")

    from .sweep import add_arguments as add_sweep_arguments

    add_sweep_arguments(
        commands.add_parser("sweep", help="evaluate models x lengths, one lm-eval process per cell (resumable, shardable)")
    )
    commands.add_parser("include-path", help="print the task_configs directory (for lm_eval --include_path)")
    add_report_commands(commands)
    return parser


def _data(args: argparse.Namespace) -> int:
    from . import sources

    if args.action == "download":
        for path in sources.download(args.names or None, args.cache_dir):
            print(f"ok  {path}")
        return 0
    if args.action == "import":
        for path in args.paths:
            imported = sources.import_file(path, args.cache_dir)
            for source in imported if isinstance(imported, list) else [imported]:
                print(f"imported {source.name} ({source.filename})")
        return 0
    rows = sources.status(args.cache_dir)
    for row in rows:
        state = "verified" if row.verified else ("present, NOT verified" if row.present else "missing")
        print(f"{row.name:10} {state:22} {row.path}  {row.detail}")
    return 0 if all(row.verified for row in rows) else 1


def _cache(args: argparse.Namespace) -> int:
    from . import sources
    from ._cache import DatasetCache

    cache = DatasetCache(sources.cache_dir(args.cache_dir) / "datasets")
    if args.action == "clear":
        print(f"removed {cache.clear()} cached dataset(s) from {cache.root}")
        return 0
    for entry in cache.entries():
        info = entry.info
        print(
            f"{info.get('task', '?'):16} {info.get('length', '?'):>8} {info.get('profile', '?'):9} "
            f"n={entry.count:<4} tok={info.get('tokenizer', '?')} {entry.size / 1e6:.1f} MB  {entry.key[:12]}"
        )
    return 0


def _generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from . import sources
    from ._dataset import DatasetOptions
    from ._tasks import TASKS, parse_length
    from .errors import ConfigurationError

    tasks = list(TASKS) if args.tasks == "all" else [t.strip() for t in args.tasks.split(",")]
    lengths = [parse_length(value.strip()) for value in args.lengths.split(",")]
    modes = {"true": ("chat",), "false": ("raw",), "both": ("raw", "chat")}[args.apply_chat_template]
    data_files = []
    for entry in args.data_file:
        name, sep, path = entry.partition("=")
        if not sep or name not in sources.SOURCES:
            names = ", ".join(f"{source}=PATH" for source in sources.SOURCES)
            raise ConfigurationError(f"--data-file expects one of {names}, got {entry!r}")
        data_files.append((name, path))
    if args.jobs < 1:
        raise ConfigurationError(f"--jobs must be at least 1, got {args.jobs}")
    options = DatasetOptions(
        tokenizer=args.tokenizer,
        num_samples=args.num_samples,
        seed=args.seed,
        profile=args.profile,
        render_modes=modes,
        cache_dir=args.cache_dir,
        data_files=tuple(data_files),
    )
    # Longest first, so the last cells to finish are short ones and workers end together.
    cells = sorted(((task, length) for length in lengths for task in tasks), key=lambda cell: -cell[1])
    with tqdm(total=len(cells), desc="RULER datasets", unit="task") as progress:
        for line in _generated_cells(cells, options, args.jobs):
            progress.write(line)
            progress.update()
    return 0


def _generated_cells(cells: list[tuple[str, int]], options: Any, jobs: int) -> Iterator[str]:
    """One summary line per generated (or cached) task-length, in completion order."""
    if jobs == 1:
        for cell in cells:
            yield _generate_cell(cell, options)
        return
    import concurrent.futures
    import multiprocessing

    # spawn: tokenizers' thread pool does not survive fork.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = [pool.submit(_generate_cell, cell, options) for cell in cells]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()


def _generate_cell(cell: tuple[str, int], options: Any) -> str:
    from ._dataset import build_dataset

    task, length = cell
    result = build_dataset(task, length, options)
    stats = result.info["prompt_tokens"]
    return (
        f"{task:16} {length:>8} {'cached' if result.from_cache else 'generated':9} "
        f"prompt tokens {stats['min']}/{stats['median']}/{stats['max']} (min/median/max)"
    )


def _sweep(args: argparse.Namespace) -> int:
    from .sweep import run_command

    return run_command(args)


def run_lm_eval(argv: Sequence[str]) -> None:
    """lm-eval's CLI with this plugin's tasks registered (whatever LM_EVAL_RULER_AUTOLOAD says)."""
    from ._hook import patch_lm_eval

    patch_lm_eval()
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm-eval-ruler", *argv]
    cli_evaluate()


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in OWN_COMMANDS or args_list[:1] in (["-h"], ["--help"]) or not args_list:
        parser = _build_parser()
        if not args_list:
            parser.print_help()
            return 0
        args = parser.parse_args(args_list)
        from .errors import RulerError

        try:
            if args.command in REPORT_COMMANDS:
                return args.report_handler(args)
            if args.command == "include-path":
                from ._tasks import task_configs_dir

                print(task_configs_dir())
                return 0
            return {"data": _data, "cache": _cache, "generate": _generate, "sweep": _sweep}[args.command](args)
        except RulerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    run_lm_eval(args_list)
    return 0


if __name__ == "__main__":
    sys.exit(main())
