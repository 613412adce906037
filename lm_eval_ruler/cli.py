"""The ``lm-eval-ruler`` command: lm-eval's own CLI with RULER tasks, plus data tools.

Anything that is not one of our subcommands goes to lm-eval unchanged, so
``lm-eval-ruler run --model vllm ... --tasks ruler_niah_64k`` behaves exactly
like ``lm_eval run`` with this plugin's tasks registered.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from .report.cli import REPORT_COMMANDS, add_report_commands

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

Errors: bad RULER task names, --metadata values or a missing backend are reported before
lm-eval loads the model, as one "error: ..." line with exit code 2. Add --debug (anywhere)
for the full traceback; --version prints lm-eval-ruler's and lm-eval's versions.
"""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lm-eval-ruler",
        description="RULER long-context benchmark for lm-evaluation-harness: run evaluations, manage data and caches.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Both are handled in main() before parsing; declared here for --help.
    parser.add_argument("--version", action="version", version=_version_text(), help="print versions and exit")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error (any position)")
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

    _add_cache_commands(commands)

    generate = commands.add_parser(
        "generate",
        help="generate datasets into the cache ahead of a run (e.g. on a CPU node before a GPU job)",
    )
    generate.add_argument("--tokenizer", required=True, help="the evaluated model's tokenizer (path or model id)")
    generate.add_argument("--tasks", default="all", help="comma-separated RULER task names (default: all 13)")
    generate.add_argument("--lengths", default="4k", help="comma-separated lengths, e.g. 4k,8k,100000")
    from ._tasks import DEFAULT_NUM_SAMPLES, DEFAULT_PROFILE, DEFAULT_SEED, PROFILES

    generate.add_argument("--num-samples", type=int, default=DEFAULT_NUM_SAMPLES)
    generate.add_argument("--profile", default=DEFAULT_PROFILE, choices=PROFILES)
    generate.add_argument("--seed", type=int, default=DEFAULT_SEED)
    generate.add_argument("--apply-chat-template", choices=("auto", "true", "false", "both"), default="auto",
                          help="the rendering your runs will use, which is part of the cache key: auto (default) = the "
                          "tokenizer's chat template when it has one, as `lm_eval ... --apply_chat_template` and the "
                          "sweep run it; true/false = with/without it; both = one dataset for each")
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
    from .data import sources

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


_CACHE_EPILOG = """\
Examples:
  lm-eval-ruler cache ls                              # what is cached, and any bad entries
  lm-eval-ruler cache verify                          # re-read every entry, check its sha256
  lm-eval-ruler cache clear --bad                     # remove unreadable/damaged entries only
  lm-eval-ruler cache clear --task qa_squad --length 128k --dry-run
  lm-eval-ruler cache clear --tokenizer Llama-3.1 --older-than 30d
  lm-eval-ruler cache clear --all                     # everything

Datasets live in <cache>/datasets (<cache> is --cache-dir, else $LM_EVAL_RULER_CACHE,
else ~/.cache/lm-eval-ruler). A removed dataset is simply generated again when needed.
"""
_CLEAR_SELECTORS = "--task, --length, --tokenizer, --older-than, --bad"
_CACHE_DIR_HELP = "cache directory (default: $LM_EVAL_RULER_CACHE or ~/.cache/lm-eval-ruler)"


def _add_cache_commands(commands: Any) -> None:
    """``lm-eval-ruler cache ls|verify|clear``."""
    raw = argparse.RawDescriptionHelpFormatter
    cache = commands.add_parser(
        "cache",
        help="list, verify or clear generated datasets",
        description="Inspect and clean the generated-dataset cache.",
        epilog=_CACHE_EPILOG,
        formatter_class=raw,
    )
    cache_commands = cache.add_subparsers(dest="action", required=True)
    ls = cache_commands.add_parser(
        "ls",
        help="list cached datasets, one row each (exit 1 if any entry is bad)",
        description="List cached datasets: task, length, profile, seed, samples, render modes (raw, chat,\n"
        "raw+chat), system instruction (hash), model template, size, age, key prefix and tokenizer.\n"
        "Unreadable entries are listed as BAD rows.\n\n"
        "Exit status: 0 when every entry is good, 1 when some entry is bad.",
        epilog=_CACHE_EPILOG,
        formatter_class=raw,
    )
    ls.add_argument("--cache-dir", help=_CACHE_DIR_HELP)
    verify = cache_commands.add_parser(
        "verify",
        help="re-read every entry and check its sha256 (exit 1 if any entry is bad)",
        description="Read every cached dataset in full and check its doc count and sha256 trailer, as a run\n"
        "does when it loads one; nothing is deleted.\n\n"
        "Exit status: 0 when every entry is good, 1 when some entry is bad.",
        epilog=_CACHE_EPILOG,
        formatter_class=raw,
    )
    verify.add_argument("--cache-dir", help=_CACHE_DIR_HELP)
    clear = cache_commands.add_parser(
        "clear",
        help=f"delete cached datasets chosen by {_CLEAR_SELECTORS}, or --all",
        description="Delete the cached datasets matching every selector given (they combine: --task qa_squad\n"
        "--length 128k removes qa_squad at 128k only). Without a selector, --all is required to delete\n"
        "everything. Prints one line per removed entry and a count.",
        epilog=_CACHE_EPILOG,
        formatter_class=raw,
    )
    clear.add_argument("--task", help="a RULER task name, e.g. niah_single_1 or qa_squad")
    clear.add_argument("--length", type=_length_arg, help="a length name (4k, 128k) or a token count (100000)")
    clear.add_argument("--tokenizer", help="part of the recorded tokenizer path or model id, e.g. Llama-3.1-8B")
    clear.add_argument("--older-than", type=_age_arg, metavar="AGE", help="last written more than AGE ago: 30m, 12h, 7d, 2w")
    clear.add_argument("--bad", action="store_true", help="only entries `cache ls` lists as BAD (unreadable, empty, old format)")
    clear.add_argument("--all", action="store_true", help="everything (required when no selector is given)")
    clear.add_argument("--dry-run", action="store_true", help="print what would be removed, remove nothing")
    clear.add_argument("--cache-dir", help=_CACHE_DIR_HELP)


def _length_arg(value: str) -> int:
    from ._tasks import parse_length
    from .errors import ConfigurationError

    try:
        return parse_length(value)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _age_arg(value: str) -> float:
    """``30m``, ``12h``, ``7d``, ``2w`` (or ``90s``) in seconds."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", value.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"invalid age {value!r}: give a number and a unit, e.g. 30m, 12h, 7d, 2w")
    return float(match.group(1)) * _AGE_UNITS[match.group(2)]


def _cache(args: argparse.Namespace) -> int:
    from .data.cache import DatasetCache
    from .errors import ConfigurationError

    cache = DatasetCache.at(args.cache_dir)
    hint = "remove them with: lm-eval-ruler cache clear --bad" + (f" --cache-dir {args.cache_dir}" if args.cache_dir else "")
    if args.action == "ls":
        entries = list(cache.entries())
        good = sorted((e for e in entries if not e.bad), key=_entry_order)
        bad = [e for e in entries if e.bad]
        if not entries:
            print(f"no cached datasets in {cache.root}")
            return 0
        print(_ENTRY_HEADER)
        for entry in good:
            print(_entry_row(entry))
        for entry in bad:
            print(f"BAD {entry.path}: {entry.error}")
        print(f"{len(good)} dataset(s), {_size(sum(e.size for e in entries))} in {cache.root}")
        if bad:
            print(f"{len(bad)} bad entr{'y' if len(bad) == 1 else 'ies'}; {hint}")
        return 1 if bad else 0
    if args.action == "verify":
        from tqdm import tqdm

        entries = list(cache.entries())
        failed = 0
        with tqdm(entries, desc="verifying cached datasets", unit="entry", file=sys.stderr, disable=None) as progress:
            for entry in progress:
                error = cache.verify(entry)
                if error is not None:
                    failed += 1
                    what = "" if entry.bad else f" ({_entry_summary(entry)})"
                    progress.write(f"BAD {entry.path}{what}: {error}", file=sys.stdout)
        print(f"verified {len(entries)} cached dataset(s) in {cache.root}: {failed} bad")
        if failed:
            print(hint)
        return 1 if failed else 0

    selectors = {
        "task": args.task,
        "length": args.length,
        "tokenizer": args.tokenizer,
        "older_than_seconds": args.older_than,
        "bad": args.bad,
    }
    selecting = any(value not in (None, False) for value in selectors.values())
    if not selecting and not args.all:
        raise ConfigurationError(
            f"cache clear needs a selector ({_CLEAR_SELECTORS}) or --all to delete every cached dataset "
            "(add --dry-run to see what would go)"
        )
    if selecting and args.all:
        raise ConfigurationError(f"--all deletes everything; it cannot be combined with {_CLEAR_SELECTORS}")
    chosen = cache.select(**selectors)
    verb = "would remove" if args.dry_run else "removed"
    for entry in sorted(chosen, key=lambda e: (e.bad, _entry_order(e))):
        print(f"{verb} {f'BAD {entry.path}: {entry.error}' if entry.bad else _entry_row(entry)}")
    if args.dry_run:
        count = len(chosen)
    else:
        count = cache.clear() if args.all else cache.remove(chosen)
    print(f"{verb} {count} cached dataset(s) from {cache.root}" + (" (dry run: nothing deleted)" if args.dry_run else ""))
    return 0


_ENTRY_HEADER = (
    f"{'TASK':20} {'LENGTH':>8} {'PROFILE':9} {'SEED':>5} {'N':>5} {'RENDER':8} {'SYSTEM':15} {'TEMPLATE':10} "
    f"{'SIZE':>9} {'AGE':>5}  {'KEY':12}  TOKENIZER"
)


def _entry_order(entry: Any) -> tuple[Any, ...]:
    info = entry.info
    return (str(info.get("task")), _as_int(info.get("length")), str(info.get("tokenizer")), str(info.get("profile")), entry.key)


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) else -1


def _entry_row(entry: Any) -> str:
    """One ``cache ls`` row: everything that tells two entries of one task and length apart."""
    import hashlib
    import time

    info = entry.info
    system = info.get("system_instruction")
    system_text = "no" if system is None else "yes:" + hashlib.sha256(str(system).encode()).hexdigest()[:8]
    modes = info.get("render_modes")
    render = "+".join(modes) if isinstance(modes, list) else "?"
    return (
        f"{info.get('task', '?')!s:20} {info.get('length', '?')!s:>8} {info.get('profile', '?')!s:9} "
        f"{info.get('seed', '?')!s:>5} {entry.count:>5} {render:8} {system_text:15} "
        f"{info.get('model_template') or '-'!s:10} {_size(entry.size):>9} {_age(time.time() - entry.mtime):>5}  "
        f"{entry.key[:12]:12}  {info.get('tokenizer', '?')}"
    )


def _entry_summary(entry: Any) -> str:
    info = entry.info
    return f"{info.get('task', '?')} {info.get('length', '?')} {entry.key[:12]}"


def _size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # pragma: no cover - unreachable


def _age(seconds: float) -> str:
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds // span:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def _generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ._tasks import TASKS, parse_length, task_spec
    from .data import sources
    from .data.options import DatasetOptions
    from .errors import ConfigurationError

    tasks = list(TASKS) if args.tasks == "all" else [task_spec(t.strip()).name for t in args.tasks.split(",")]
    lengths = [parse_length(value.strip()) for value in args.lengths.split(",")]
    renderings = _renderings(args.apply_chat_template, args.tokenizer)
    data_files = []
    for entry in args.data_file:
        name, sep, path = entry.partition("=")
        if not sep or name not in sources.SOURCES:
            names = ", ".join(f"{source}=PATH" for source in sources.SOURCES)
            raise ConfigurationError(f"--data-file expects one of {names}, got {entry!r}")
        data_files.append((name, path))
    if args.jobs < 1:
        raise ConfigurationError(f"--jobs must be at least 1, got {args.jobs}")
    variants = [
        DatasetOptions(
            tokenizer=args.tokenizer,
            num_samples=args.num_samples,
            seed=args.seed,
            profile=args.profile,
            render_modes=modes,
            cache_dir=args.cache_dir,
            data_files=tuple(data_files),
        )
        for modes in renderings
    ]
    # Longest first, so the last cells to finish are short ones and workers end together.
    cells = sorted(
        ((task, length, options) for length in lengths for task in tasks for options in variants), key=lambda cell: -cell[1]
    )
    with tqdm(total=len(cells), desc="RULER datasets", unit="task") as progress:
        for line in _generated_cells(cells, args.jobs):
            progress.write(line)
            progress.update()
    print(served_runs_text(args, tasks, lengths, renderings))
    return 0


def _renderings(choice: str, tokenizer: str) -> list[tuple[str, ...]]:
    """The render modes to generate for: what ``lm_eval`` runs with and without --apply_chat_template key on."""
    if choice == "auto":
        from .data.tokens import chat_template_text, load_tokenizer

        choice = "true" if chat_template_text(load_tokenizer(tokenizer)) else "false"
    return {"true": [("chat",)], "false": [("raw",)], "both": [("chat",), ("raw",)]}[choice]


def served_runs_text(args: argparse.Namespace, tasks: list[str], lengths: list[int], renderings: list[tuple[str, ...]]) -> str:
    """The lm_eval and sweep flags whose runs load exactly these datasets from the cache."""
    from ._tasks import CUSTOM_LENGTH, CUSTOM_LENGTH_KEY, DEFAULT_PROFILE, DEFAULT_SEED, LENGTHS, PREFIX, TASKS

    names = {tokens: name for name, tokens in LENGTHS.items()}
    metadata: dict[str, Any] = {"num_samples": args.num_samples}
    sweep = [f"--num-samples {args.num_samples}"]
    if args.seed != DEFAULT_SEED:
        metadata["ruler_seed"] = args.seed
        sweep.append(f"--seed {args.seed}")
    if args.profile != DEFAULT_PROFILE:
        metadata["ruler_profile"] = args.profile
        sweep.append(f"--profile {args.profile}")
    if args.cache_dir:
        metadata["ruler_cache_dir"] = args.cache_dir
        sweep.append(f"--cache-dir {shlex.quote(args.cache_dir)}")
    for entry in args.data_file:
        name, _, path = entry.partition("=")
        metadata[f"ruler_{name}_file"] = path
        sweep.append(f"--model-arg ruler_{name}_file={shlex.quote(path)}")
    if len(tasks) < len(TASKS):
        sweep.append(f"--tasks {','.join(tasks)}")
    lines = [f"These datasets are cache hits for runs with the tokenizer {args.tokenizer} and:"]
    for modes in renderings:
        chat = modes == ("chat",)
        for tokens in sorted(lengths):
            suffix = names.get(tokens, CUSTOM_LENGTH)
            run_tasks = [f"{PREFIX}_{suffix}"] if len(tasks) == len(TASKS) else [TASKS[t].task_name(suffix) for t in tasks]
            run_metadata = metadata if suffix != CUSTOM_LENGTH else {**metadata, CUSTOM_LENGTH_KEY: tokens}
            lines.append(
                f"  lm_eval --model vllm --model_args pretrained=MODEL,max_model_len={tokens} --tasks {','.join(run_tasks)}"
                f"{' --apply_chat_template' if chat else ''} --metadata {shlex.quote(json.dumps(run_metadata))}"
            )
        length_list = ",".join(names.get(tokens, str(tokens)) for tokens in sorted(lengths))
        lines.append(
            f"  lm-eval-ruler sweep --model MODEL --lengths {length_list} {' '.join(sweep)}"
            f"{'' if chat else ' --no-apply-chat-template'}"
        )
    lines.append("(MODEL: the model whose tokenizer this is, or add tokenizer=... to its model args.)")
    return "\n".join(lines)


def _generated_cells(cells: list[tuple[str, int, Any]], jobs: int) -> Iterator[str]:
    """One summary line per generated (or cached) task-length, in completion order."""
    if jobs == 1:
        for cell in cells:
            yield _generate_cell(cell)
        return
    import concurrent.futures
    import multiprocessing

    # spawn: tokenizers' thread pool does not survive fork.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = [pool.submit(_generate_cell, cell) for cell in cells]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()


def _generate_cell(cell: tuple[str, int, Any]) -> str:
    from .data.build import build_dataset

    task, length, options = cell
    result = build_dataset(task, length, options)
    stats = result.info["prompt_tokens"]
    return (
        f"{task:16} {length:>8} {'+'.join(options.render_modes):4} {'cached' if result.from_cache else 'generated':9} "
        f"prompt tokens {stats['min']}/{stats['median']}/{stats['max']} (min/median/max)"
    )


def _sweep(args: argparse.Namespace) -> int:
    from .sweep import run_command

    return run_command(args)


def _version_text() -> str:
    from importlib import metadata

    from . import __version__

    try:
        lm_eval_version = metadata.version("lm_eval")
    except metadata.PackageNotFoundError:
        lm_eval_version = "not installed"
    return f"lm-eval-ruler {__version__} (lm-eval {lm_eval_version})"


def check_lm_eval_args(argv: Sequence[str]) -> bool:
    """Validate the RULER parts of an lm-eval command line before lm-eval (or any model) loads.

    True when every requested task is one of ours, so lm-eval's own task index is not needed.

    The arguments are parsed by lm-eval's own parser, so ``--tasks``/``-t``,
    ``--metadata`` (JSON or ``k=v,k=v``, repeatable) and ``--model_args`` mean
    exactly what they will mean to lm-eval. With ``--config`` the merged values
    are only known inside lm-eval; the startup hook's check covers that case.
    """
    import logging

    from lm_eval._cli.harness import HarnessCLI

    from ._validate import requested_names, validate_run

    saved = sys.argv
    sys.argv = ["lm-eval-ruler", *argv]
    logging.disable(logging.WARNING)  # its "overwriting key" warnings come again from lm-eval's own parse
    try:
        args = HarnessCLI().parse_args()
    finally:
        logging.disable(logging.NOTSET)
        sys.argv = saved
    if getattr(args, "command", None) != "run" or getattr(args, "config", None):
        return False
    ours = validate_run(args.tasks, args.metadata, args.model or "hf", args.model_args)
    return bool(ours) and len(ours) == len(requested_names(args.tasks))


def run_lm_eval(argv: Sequence[str]) -> None:
    """lm-eval's CLI with this plugin's tasks registered (whatever LM_EVAL_RULER_AUTOLOAD says)."""
    only_ours = check_lm_eval_args(argv)
    from ._hook import patch_lm_eval

    patch_lm_eval(only_our_tasks=only_ours)
    from lm_eval.__main__ import cli_evaluate

    saved = sys.argv
    sys.argv = ["lm-eval-ruler", *argv]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved


def main(argv: Sequence[str] | None = None) -> int:
    """``--debug`` (anywhere) shows a RulerError's traceback instead of one ``error:`` line; exit code 2 either way."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    args_list = [arg for arg in args_list if arg != "--debug"]
    if args_list[:1] == ["--version"]:
        print(_version_text())
        return 0
    from .errors import run_reporting_errors

    return run_reporting_errors(lambda: _dispatch(args_list), debug=debug)


def _dispatch(args_list: list[str]) -> int:
    if args_list and args_list[0] in OWN_COMMANDS or args_list[:1] in (["-h"], ["--help"]) or not args_list:
        parser = _build_parser()
        if not args_list:
            parser.print_help()
            return 0
        args = parser.parse_args(args_list)
        if args.command in REPORT_COMMANDS:
            return args.report_handler(args)
        if args.command == "include-path":
            from ._tasks import task_configs_dir

            print(task_configs_dir())
            return 0
        return {"data": _data, "cache": _cache, "generate": _generate, "sweep": _sweep}[args.command](args)
    run_lm_eval(args_list)
    return 0


if __name__ == "__main__":
    sys.exit(main())
