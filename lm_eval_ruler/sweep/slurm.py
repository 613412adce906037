"""``lm-eval-ruler sweep --slurm``: the sweep as one Slurm job array, one array task per cell.

On a cluster each cell (one model at one length) wants its own GPUs, time limit and place in
the queue, and a sweep of a few models x six lengths should be one submission, not a shell
loop. So the submitting process does everything once: every check of the sweep (windows,
backend, settings, with ``--replace`` moving old cells aside) and every pending cell's data
generation, into the shared cache. It then writes ``OUTPUT/slurm/sweep.sh`` (the array: task
``i`` runs cell ``i``) and ``OUTPUT/slurm/report.sh`` (``lm-eval-ruler report`` after the
array, whatever its outcome), and with ``--submit`` submits both.

Each array task runs this same sweep command restricted to its cell (``--shard i/CELLS
--no-report``, the absolute output and cache), so resume, ``cell.json`` states and the settings
rules are the sweep's own, and the tasks only load data from the cache. Resubmitting the
command submits only the cells that are neither done, nor running, nor still queued in an
array this output recorded in ``OUTPUT/slurm/jobs.json``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .._files import write_atomically, write_json_atomically
from ..errors import ConfigurationError
from ..report.sweep_folder import read_state
from .config import Resolved, SweepConfig, parse_shard
from .plan import Cell, base_model_args
from .run import Sweep
from .state import checkout_root, now

SLURM_DIR = "slurm"
ARRAY_SCRIPT = "sweep.sh"
REPORT_SCRIPT = "report.sh"
REPORT_FILE = "report.md"
JOBS_FILE = "jobs.json"
LOGS_DIR = "logs"
JOB_NAME = "ruler-sweep"

#: sbatch's long option names (``partition``, ``time``, ``gres`` ...): what ``#SBATCH --KEY`` accepts.
_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]+")
#: Options the sweep sets itself, and why a user's value would break it.
_OWNED = {
    "array": "the array is one task per pending cell, computed from the cells' states",
    "dependency": "the report job depends on the array; the array depends on nothing",
    "output": f"logs go to OUTPUT/{SLURM_DIR}/{LOGS_DIR}/ so that failures can point at them",
    "error": f"logs go to OUTPUT/{SLURM_DIR}/{LOGS_DIR}/ so that failures can point at them",
    "wrap": "the sweep writes the job scripts",
}
#: A GPU request given by the user replaces the sweep's default ``--gres=gpu:N``.
_GPU_KEYS = {"gres", "gpus", "gpus-per-task", "gpus-per-node", "gpus-per-socket"}
#: Sweep options the array tasks get their own values of (or must not get at all).
_NOT_FORWARDED = {"slurm", "slurm_options", "submit", "dry_run", "replace", "shard", "output", "cache_dir", "report", "progress"}


@dataclass(frozen=True)
class SlurmOptions:
    """``--slurm-option`` items as ``(key, value)``, value None for a flag; and whether to submit."""

    options: tuple[tuple[str, str | None], ...] = ()
    submit: bool = False


def add_slurm_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the "slurm" option group to the sweep's parser.

    The parser is kept on the namespace (``sweep_parser``) because the array tasks rerun the
    user's own command line, rebuilt from the parsed values by the parser's own actions: so
    every sweep option, today's and any added later, reaches the tasks unchanged.
    """
    slurm = parser.add_argument_group("slurm")
    slurm.add_argument("--slurm", action="store_true",
                       help=f"write one Slurm job array, one task per pending cell, and a report job after it, to "
                       f"OUTPUT/{SLURM_DIR}/ (data are generated here first, once); print the sbatch commands")  # fmt: skip
    slurm.add_argument("--slurm-option", dest="slurm_options", action="append", default=[], metavar="KEY=VALUE",
                       help="an sbatch option for the jobs, written as #SBATCH --KEY=VALUE (repeatable), e.g. "
                       "partition=gpu, time=04:00:00, account=myproj; a GPU option replaces the default "
                       "--gres=gpu:N (N = tensor x data parallel size for vllm)")  # fmt: skip
    slurm.add_argument("--submit", action="store_true",
                       help="with --slurm: submit the array with sbatch, and the report job after it "
                       f"(writes OUTPUT/{SLURM_DIR}/{REPORT_FILE}); rerun the same command to submit only unfinished cells")  # fmt: skip
    parser.set_defaults(sweep_parser=parser)


def slurm_options(args: argparse.Namespace) -> SlurmOptions | None:
    """The Slurm options of a parsed sweep command line; None without ``--slurm``.

    Refuses ``--submit`` or ``--slurm-option`` without ``--slurm``, which would otherwise run
    the whole sweep on this machine when the user meant to queue it.
    """
    if not args.slurm:
        given = [flag for flag, value in (("--submit", args.submit), ("--slurm-option", args.slurm_options)) if value]
        if given:
            raise ConfigurationError(f"{' and '.join(given)} need --slurm: add --slurm to write (and submit) the job array")
        return None
    return SlurmOptions(parse_slurm_options(args.slurm_options), args.submit)


def parse_slurm_options(items: Sequence[str]) -> tuple[tuple[str, str | None], ...]:
    """``KEY=VALUE`` (or a bare ``KEY`` flag) items, checked: they become ``#SBATCH --KEY=VALUE`` lines."""
    parsed = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not _KEY_RE.fullmatch(key):
            raise ConfigurationError(
                f"invalid --slurm-option {item!r}: write an sbatch long option name (letters, digits, dashes) and its value, "
                "e.g. --slurm-option partition=gpu --slurm-option time=04:00:00"
            )
        if key in _OWNED:
            raise ConfigurationError(f"--slurm-option {key}=... is set by the sweep ({_OWNED[key]}); drop it")
        if "\n" in value or "\r" in value:
            raise ConfigurationError(f"invalid --slurm-option {key}: its value spans lines; give it on one line")
        parsed.append((key, value.strip() if sep else None))
    return tuple(parsed)


def gpus_per_cell(resolved: Resolved) -> int:
    """GPUs one cell's lm-eval process uses, so each array task asks for exactly those.

    vLLM uses tensor x data parallel size GPUs (the largest over the models, which may set
    their own); hf one, unless it runs on the CPU; the dummy backend none, and neither does
    local-completions: the server it talks to holds the GPUs.
    """
    if resolved.backend == "vllm":
        sizes = [
            int(args.get("tensor_parallel_size") or 1) * int(args.get("data_parallel_size") or 1)
            for args in (base_model_args(resolved, spec) for spec in resolved.models)
        ]
        return max(sizes)
    if resolved.backend == "hf":
        device = str(resolved.config.device or resolved.model_args.get("device") or "cuda")
        return 0 if device.startswith("cpu") else 1
    return 0


def sbatch_lines(defaults: Sequence[tuple[str, str | None]], options: Sequence[tuple[str, str | None]]) -> list[str]:
    """``#SBATCH`` lines: the sweep's defaults, each replaced by a user option of the same key, then the rest."""
    user = dict(options)
    if _GPU_KEYS & set(user):
        defaults = [(key, value) for key, value in defaults if key not in _GPU_KEYS]
    merged = {key: user.pop(key, value) for key, value in defaults}
    merged.update(user)
    return [f"#SBATCH --{key}" if value is None else f"#SBATCH --{key}={value}" for key, value in merged.items()]


def forwarded_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The user's sweep options as a command line, rebuilt from the parsed values (those left at their default omitted).

    Options the array tasks set themselves (output, cache, shard, report, progress) and those
    that belong to the submission (the Slurm group, ``--dry-run``, ``--replace``) are left out.
    """
    argv: list[str] = []
    for action in parser._actions:  # argparse has no public list of a parser's actions
        if not action.option_strings or action.dest in _NOT_FORWARDED or action.dest == argparse.SUPPRESS:
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):
            argv.append(action.option_strings[0 if value else 1])
        elif action.nargs == 0:
            argv.append(flag)
        else:  # FLAG=VALUE: a value that starts with a dash (--lm-eval-args=--limit) is not taken for an option
            argv += [f"{flag}={item}" for item in (value if isinstance(value, list) else [value])]
    return argv


def task_command(forwarded: Sequence[str], resolved: Resolved) -> list[str]:
    """An array task's sweep command, without its ``--shard``: absolute Python, output and cache, no report."""
    return [sys.executable, "-m", "lm_eval_ruler", "sweep", *forwarded, "--output", str(resolved.output),
            "--cache-dir", str(resolved.cache_dir), "--no-report", "--no-progress"]  # fmt: skip


def _script(lines: Sequence[str], comment: str, command: str) -> str:
    exports = []
    root = checkout_root()
    if root is not None:  # a checkout, not an installed copy: the tasks import this one
        exports.append(f'export PYTHONPATH={shlex.quote(str(root))}"${{PYTHONPATH:+:$PYTHONPATH}}"')
    return "\n".join(["#!/bin/bash", *lines, f"# {comment}", *exports, f"exec {command}", ""])


def array_script(resolved: Resolved, cells: Sequence[Cell], cell_count: int, command: Sequence[str],
                 options: Sequence[tuple[str, str | None]]) -> str:  # fmt: skip
    """The array's job script: task ``i`` runs cell ``i`` of ``cell_count`` (``--shard i/cell_count``)."""
    logs = resolved.output / SLURM_DIR / LOGS_DIR
    gpus = gpus_per_cell(resolved)
    defaults: list[tuple[str, str | None]] = [
        ("job-name", JOB_NAME),
        ("array", ",".join(str(cell.index) for cell in cells)),
        ("output", str(logs / "%A_%a.out")),
        ("chdir", os.getcwd()),
    ]
    if gpus:
        defaults.append(("gres", f"gpu:{gpus}"))
    comment = f"lm-eval-ruler sweep --slurm: array task i runs cell i of {cell_count}; rerun the sweep command to submit only the cells not done"
    shell_command = f'{shlex.join(command)} --shard "${{SLURM_ARRAY_TASK_ID}}/{cell_count}"'
    return _script(sbatch_lines(defaults, options), comment, shell_command)


def report_script(resolved: Resolved, options: Sequence[tuple[str, str | None]]) -> str:
    """The report job's script: ``lm-eval-ruler report OUTPUT`` into ``OUTPUT/slurm/report.md``, on no GPU."""
    job_name = dict(options).get("job-name") or JOB_NAME
    defaults: list[tuple[str, str | None]] = [
        ("job-name", f"{job_name}-report"),
        ("output", str(resolved.output / SLURM_DIR / LOGS_DIR / "report_%j.out")),
        ("chdir", os.getcwd()),
    ]
    kept = [(key, value) for key, value in options if key not in _GPU_KEYS and key != "job-name"]
    command = [sys.executable, "-m", "lm_eval_ruler", "report", str(resolved.output),
               "--output", str(resolved.output / SLURM_DIR / REPORT_FILE)]  # fmt: skip
    return _script(sbatch_lines(defaults, kept), "lm-eval-ruler sweep --slurm: the report, after the array", shlex.join(command))


# --------------------------------------------------------------------------------------------
# submissions


def _submissions(output: Path) -> list[dict[str, Any]]:
    recorded = read_state(output / SLURM_DIR / JOBS_FILE) or {}
    submissions = recorded.get("submissions")
    return [item for item in submissions if isinstance(item, dict)] if isinstance(submissions, list) else []


def queued_cells(output: Path, say: Callable[[str], None]) -> dict[str, str]:
    """Cells (``model-folder/length``) still queued or running in an array this output recorded, with the job.

    Their ``cell.json`` may not exist yet (a pending task has not started), so only the queue
    knows them; submitting them again would run them twice.
    """
    submissions = _submissions(output)
    if not submissions:
        return {}
    squeue = shutil.which("squeue")
    if squeue is None:
        say(f"note: squeue not found: cannot check whether the arrays in {output / SLURM_DIR / JOBS_FILE} still run")
        return {}
    try:
        listed = subprocess.run([squeue, "-h", "-r", "-u", getpass.getuser(), "-o", "%F %K"], check=True,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        say(f"note: squeue failed ({exc}): submitting every cell that is not done or running")
        return {}
    live = {tuple(line.split()[:2]) for line in listed.stdout.splitlines() if line.strip()}
    return {
        folder: str(submission.get("array_job"))
        for submission in submissions
        for index, folder in dict(submission.get("cells") or {}).items()
        if (str(submission.get("array_job")), str(index)) in live
    }


def _sbatch(sbatch: str, script: Path, *extra: str) -> str:
    command = [sbatch, "--parsable", *extra, str(script)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigurationError(f"cannot run {shlex.join(command)}: {exc}") from None
    if done.returncode != 0:
        raise ConfigurationError(
            f"sbatch refused {script}: {(done.stderr or done.stdout).strip()}. Fix the --slurm-option values it names "
            "(partition, account, time ...) and rerun the same command"
        )
    return done.stdout.strip().split(";")[0]


def _record(output: Path, submission: dict[str, Any]) -> None:
    submissions = [item for item in _submissions(output) if item.get("array_job") != submission["array_job"]]
    write_json_atomically(output / SLURM_DIR / JOBS_FILE, {"submissions": [*submissions, submission]})


def _pending(sweep: Sweep, queued: dict[str, str]) -> list[Cell]:
    """The cells to submit: not done, not running elsewhere, not queued in an earlier array."""
    pending = []
    for cell in sweep.cells:
        kind = sweep.kinds[cell.index]
        folder = str(cell.directory.relative_to(sweep.resolved.output))
        if kind == "todo" and folder in queued:
            sweep.kinds[cell.index] = "queued"
            sweep.say(f"skip {cell.title}: still queued or running in array job {queued[folder]}")
        elif kind == "busy":
            state = sweep.states[cell.index] or {}
            sweep.say(f"skip {cell.title}: running elsewhere (pid {state.get('pid')} on {state.get('host')})")
        elif kind == "todo":
            pending.append(cell)
    return pending


def run_slurm(config: SweepConfig, args: argparse.Namespace, options: SlurmOptions) -> int:
    """Check, generate data, write the array and report scripts; submit them with ``options.submit``.

    Returns 0 (also when every cell is done: nothing is submitted); every refusal raises
    :class:`ConfigurationError` before anything is generated or submitted.
    """
    if parse_shard(config.shard) != (0, 1):
        raise ConfigurationError("--slurm runs every cell as its own array task: drop --shard (it shards within one job)")
    sbatch = shutil.which("sbatch")
    if options.submit and sbatch is None and not config.dry_run:
        raise ConfigurationError(
            "sbatch not found on PATH: run this on a Slurm login node (or load its module), or drop --submit "
            f"to write the scripts to OUTPUT/{SLURM_DIR}/ and print the sbatch commands. Nothing was generated or submitted"
        )
    sweep = Sweep(replace(config, report=False, process_per_cell=True), None)  # it submits; it runs no cell
    sweep.check()
    output = sweep.resolved.output
    pending = _pending(sweep, queued_cells(output, sweep.say))
    if not pending:
        done = sum(kind == "done" for kind in sweep.kinds.values())
        print(f"nothing to do: {done} of {len(sweep.cells)} cells done, {len(sweep.cells) - done} running or queued; "
              f"the report: lm-eval-ruler report {shlex.quote(str(output))}", flush=True)  # fmt: skip
        return 0
    if not config.dry_run:
        sweep.prepare_pending()
    command = task_command(forwarded_arguments(args.sweep_parser, args), sweep.resolved)
    array_text = array_script(sweep.resolved, pending, len(sweep.all_cells), command, options.options)
    report_text = report_script(sweep.resolved, options.options)
    slurm_dir = output / SLURM_DIR
    array_path, report_path = slurm_dir / ARRAY_SCRIPT, slurm_dir / REPORT_SCRIPT
    submit_line = (f"job=$(sbatch --parsable {shlex.quote(str(array_path))}) && "
                   f"sbatch --dependency=afterany:${{job%%;*}} {shlex.quote(str(report_path))}")  # fmt: skip
    indices = ",".join(str(cell.index) for cell in pending)
    if config.dry_run:
        print(f"# {array_path} (not written: dry run)\n{array_text}\n# {report_path} (not written: dry run)\n{report_text}")
        print(f"# then, for real (without --dry-run, with --submit to have it done):\n{submit_line}", flush=True)
        return 0
    (slurm_dir / LOGS_DIR).mkdir(parents=True, exist_ok=True)
    for path, text in ((array_path, array_text), (report_path, report_text)):
        write_atomically(path, lambda handle, text=text: handle.write(text.encode("utf-8")))
    if not options.submit or sbatch is None:
        print(f"# wrote {array_path} (array {indices}: {len(pending)} of {len(sweep.all_cells)} cells) and {report_path}; "
              f"submit both with:\n{submit_line}", flush=True)  # fmt: skip
        return 0
    array_job = _sbatch(sbatch, array_path)
    submission: dict[str, Any] = {
        "array_job": array_job,
        "report_job": None,
        "submitted": now(),
        "cells": {str(cell.index): str(cell.directory.relative_to(output)) for cell in pending},
    }
    _record(output, submission)
    try:
        submission["report_job"] = _sbatch(sbatch, report_path, f"--dependency=afterany:{array_job}")
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"array job {array_job} was submitted, but not the report job ({exc}); submit it yourself: "
            f"sbatch --dependency=afterany:{array_job} {shlex.quote(str(report_path))}"
        ) from None
    _record(output, submission)
    print(f"submitted array job {array_job} (cells {indices}: {', '.join(cell.title for cell in pending)}) and report job "
          f"{submission['report_job']} after it (writes {slurm_dir / REPORT_FILE}); logs in {slurm_dir / LOGS_DIR}/",
          flush=True)  # fmt: skip
    return 0
