#!/usr/bin/env python3
"""The seed's quantization study in miniature: RULER accuracy of one model in bf16, online FP8, INT8
W8A8 and INT4 W4A16, evaluated with this checkout's `lm_eval_ruler sweep` on vLLM, then `report`
and a `compare --min-recovery 99` gate per variant, summarised in OUT/SUMMARY.md.

Steps (each a subprocess; its command line is printed before it runs, its output goes to the
console and to OUT/logs/, its wall time is recorded):

  1. facts: GPU (nvidia-smi), versions (python, torch, vllm, lm-eval, transformers, the plugin's
     --version, llmcompressor)
  2. `lm_eval_ruler data import DIR` when --data-dir is given (or the bundle's data/ exists)
  3. build_model.py: the bf16 checkpoint, when --model is a .gguf
  4. quantize.py: one per checkpoint variant (w8a8, w4a16), from the bf16 checkpoint
  5. ONE `lm_eval_ruler sweep` over all variants (fp8 = the bf16 checkpoint + quantization=fp8)
  6. `lm_eval_ruler report` (html, markdown) and one `compare` per variant
  7. OUT/SUMMARY.md and OUT/steps.json (also written when a step fails or the run is interrupted)

A failed step is recorded with its exit code and the tail of its log; later steps that do not
depend on it still run. A failed gate (compare exits 1) is a result, not an error. The sweep is
resumable (it skips finished cells), so rerunning the same command continues a study;
--skip-existing also keeps checkpoints that are already built. --time-budget stops cleanly before a
device call's time limit, so a long study can be spread over several calls.

Stdlib only (Python >= 3.10); --dry-run prints every command and runs nothing (no GPU, vLLM or
model needed).

  python3 benchmarks/gpu_study/study.py --out /tmp/study                      # bundle defaults
  python3 benchmarks/gpu_study/study.py --model ~/ckpt/SmolLM2-135M-Instruct --out study --dry-run
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUNDLE = Path(os.environ.get("GPU_STUDY_BUNDLE", "/tmp/v"))

#: RULER's tasks without the two QA ones (their SQuAD/HotpotQA files cannot be downloaded offline).
NON_QA_TASKS = (
    "niah_single_1",
    "niah_single_2",
    "niah_single_3",
    "niah_multikey_1",
    "niah_multikey_2",
    "niah_multikey_3",
    "niah_multivalue",
    "niah_multiquery",
    "vt",
    "cwe",
    "fwe",
)
VARIANTS = ("bf16", "fp8", "w8a8", "w4a16")
#: variants that need a checkpoint made by quantize.py
CHECKPOINT_VARIANTS = ("w8a8", "w4a16")
#: variants that vLLM quantizes at load time from the bf16 checkpoint: --model-option values
ONLINE_VARIANTS = {"fp8": ("quantization=fp8",)}
CANDIDATE_LENGTHS = (("4k", 4096), ("8k", 8192))
MIN_RECOVERY = 99
TAIL_LINES = 200  # lines of each step's output kept in memory (the whole output is in its log)


@dataclass
class Step:
    """One subprocess of the study, and what became of it."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # set for this step only (shown before the command)
    ok_codes: tuple[int, ...] = (0,)  # compare: 1 = the gate failed, a result
    output: Path | None = None  # what the step makes (for --skip-existing and the summary)
    # filled in when it runs
    status: str = "pending"  # ok | gate-failed | failed | skipped | interrupted | dry-run
    rc: int | None = None
    wall_s: float | None = None
    note: str = ""
    log: Path | None = None
    tail: list[str] = field(default_factory=list)

    def display(self) -> str:
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (prefix + " " if prefix else "") + shlex.join(self.argv)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "command": self.display(),
            "status": self.status,
            "rc": self.rc,
            "wall_s": None if self.wall_s is None else round(self.wall_s, 2),
            "note": self.note,
            "log": None if self.log is None else str(self.log),
            "output": None if self.output is None else str(self.output),
        }


# ---------------------------------------------------------------------------------------------
# the model's window


def gguf_context_length(path: Path) -> int | None:
    """``<arch>.context_length`` from a GGUF file's header (stdlib; None when unreadable)."""
    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                return None
            (version,) = struct.unpack("<I", f.read(4))
            count_fmt = "<I" if version == 1 else "<Q"
            count_size = struct.calcsize(count_fmt)
            f.read(count_size)  # tensor count
            (n_kv,) = struct.unpack(count_fmt, f.read(count_size))

            def read_string() -> str:
                (n,) = struct.unpack(count_fmt, f.read(count_size))
                return f.read(n).decode("utf-8", "replace")

            def read_value(kind: int) -> Any:
                if kind in scalar:
                    fmt = "<" + scalar[kind]
                    return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
                if kind == 8:
                    return read_string()
                if kind == 9:
                    (item_kind,) = struct.unpack("<I", f.read(4))
                    (n,) = struct.unpack(count_fmt, f.read(count_size))
                    if item_kind in scalar:  # skip without decoding
                        f.seek(n * struct.calcsize("<" + scalar[item_kind]), os.SEEK_CUR)
                    else:
                        for _ in range(n):
                            read_value(item_kind)
                    return None
                raise ValueError(f"GGUF value type {kind}")

            for _ in range(min(n_kv, 100_000)):
                key = read_string()
                (kind,) = struct.unpack("<I", f.read(4))
                value = read_value(kind)
                if key.endswith(".context_length") and isinstance(value, int):
                    return value
    except (OSError, ValueError, struct.error):
        return None
    return None


def config_positions(folder: Path) -> int | None:
    """max_position_embeddings (or the like) from an HF checkpoint's config.json."""
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    cfg = cfg.get("text_config", cfg)
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        if isinstance(cfg.get(key), int):
            return cfg[key]
    return None


def default_lengths(positions: int | None) -> tuple[str, str]:
    """(lengths, why): the candidate lengths that fit the model's positions."""
    if positions is None:
        return ",".join(n for n, _ in CANDIDATE_LENGTHS), "the model's positions are unknown before it is built; assumed"
    fitting = [n for n, tokens in CANDIDATE_LENGTHS if tokens <= positions]
    if not fitting:
        raise SystemExit(f"error: the model has {positions} positions: none of 4k, 8k fits; pass --lengths")
    return ",".join(fitting), f"the model's config says {positions} positions"


# ---------------------------------------------------------------------------------------------
# running steps


class Runner:
    def __init__(self, out: Path, dry_run: bool, time_budget: float | None) -> None:
        self.out = out
        self.dry_run = dry_run
        self.deadline = None if time_budget is None else time.monotonic() + time_budget
        self.steps: list[Step] = []
        self.stopped = ""  # why later steps are skipped (time budget)

    def skip(self, step: Step, why: str) -> Step:
        self.steps.append(step)
        if self.stopped and not self.dry_run:  # the time budget is why nothing more ran
            why = self.stopped
        step.status, step.note = "skipped", why
        print(f"# skip {step.name}: {why}\n#   {step.display()}", flush=True)
        return step

    def run(self, step: Step) -> Step:
        self.steps.append(step)
        print(f"\n$ {step.display()}", flush=True)
        if self.dry_run:
            step.status = "dry-run"
            return step
        if self.stopped:
            step.status, step.note = "skipped", self.stopped
            print(f"# skipped: {self.stopped}", flush=True)
            return step
        timeout = None
        if self.deadline is not None:
            timeout = self.deadline - time.monotonic()
            if timeout < 5:
                self.stopped = "time budget spent; rerun the same command to continue"
                step.status, step.note = "skipped", self.stopped
                print(f"# skipped: {self.stopped}", flush=True)
                return step
        logs = self.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        step.log = logs / f"{len(self.steps):02d}-{step.name}.log"
        env = dict(os.environ, **step.env)
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        t0 = time.monotonic()
        with open(step.log, "w", encoding="utf-8") as log:
            log.write(f"$ {step.display()}\n")
            log.flush()
            try:
                step.rc = _pump(step.argv, env, log, tail, timeout)
            except OSError as e:  # e.g. nvidia-smi missing
                step.rc = 127
                tail.append(f"cannot start: {e}")
                log.write(f"cannot start: {e}\n")
            except _Timeout:
                step.rc = None
                self.stopped = "time budget spent; rerun the same command to continue"
                step.status, step.note = "interrupted", self.stopped
        step.wall_s = time.monotonic() - t0
        step.tail = list(tail)
        if step.status != "interrupted":
            if step.rc in step.ok_codes:
                step.status = "ok" if step.rc == 0 else "gate-failed"
            else:
                step.status = "failed"
        print(f"# {step.name}: {step.status} (exit {step.rc}) in {step.wall_s:.1f} s", flush=True)
        return step


class _Timeout(Exception):
    pass


def _pump(argv: list[str], env: dict[str, str], log: IO[str], tail: collections.deque[str], timeout: float | None) -> int:
    """Run argv, copying its output (stdout + stderr) to the console, the log and ``tail``."""
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # one process group: a time-out stops vLLM's workers too
    )
    assert proc.stdout is not None
    deadline = None if timeout is None else time.monotonic() + timeout
    if deadline is not None:
        import threading

        def watchdog() -> None:
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    _stop(proc)
                    return
                time.sleep(1)

        threading.Thread(target=watchdog, daemon=True).start()
    try:
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace")
            sys.stdout.write(line)
            sys.stdout.flush()
            log.write(line)
            tail.append(line.rstrip("\n"))
    except KeyboardInterrupt:
        _stop(proc)
        raise
    rc = proc.wait()
    if deadline is not None and time.monotonic() > deadline and rc != 0:
        raise _Timeout()
    return rc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


# ---------------------------------------------------------------------------------------------
# the summary


def _facts(steps: list[Step]) -> dict[str, str]:
    """GPU and versions from the fact-finding steps' output."""
    facts: dict[str, str] = {}
    by_name = {s.name: s for s in steps}
    gpu = by_name.get("gpu")
    if gpu is not None and gpu.status == "ok":
        rows = [line.strip() for line in gpu.tail if line.strip() and not line.startswith("name")]
        facts["GPU"] = "; ".join(rows) or "?"
    versions = by_name.get("versions")
    if versions is not None and versions.status == "ok":
        for line in reversed(versions.tail):
            if line.startswith("{"):
                try:
                    facts.update(json.loads(line))
                except ValueError:
                    pass
                break
    plugin = by_name.get("plugin-version")
    if plugin is not None and plugin.status == "ok":
        lines = [line for line in plugin.tail if line.strip()]
        facts["lm-eval-ruler --version"] = lines[-1].strip() if lines else "?"
    quant = by_name.get("llmcompressor-version")
    if quant is not None and quant.status == "ok":
        lines = [line for line in quant.tail if line.strip()]
        facts["llmcompressor (quant PYTHONPATH)"] = lines[-1].strip() if lines else "?"
    return facts


def _verdict(step: Step) -> tuple[str, list[str]]:
    """A compare step's verdict and its recovery line(s)."""
    verdict = {
        "ok": "PASS",
        "gate-failed": "FAIL (gate)",
        "failed": f"ERROR (exit {step.rc})",
        "skipped": "not run",
        "interrupted": "not run",
        "dry-run": "not run",
    }.get(step.status, step.status)
    lines: list[str] = []
    for i, line in enumerate(step.tail):
        if re.match(r"^(PASS|FAIL)\s", line):
            lines.append(line.strip())
            lines.extend(x.strip() for x in step.tail[i + 1 :] if x.startswith("  - "))
            break
    if not lines:
        lines = [x.strip() for x in step.tail if re.match(r"^\|\s*Overall", x)] or [x.strip() for x in step.tail if "Gate:" in x]
    if not lines and step.status in ("failed",):
        lines = [x.strip() for x in step.tail if x.strip()][-1:]
    return verdict, lines


def _demote(markdown: str, levels: int = 2) -> str:
    return re.sub(r"^(#+) ", lambda m: "#" * min(6, len(m.group(1)) + levels) + " ", markdown, flags=re.MULTILINE)


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds:.0f} s ({seconds / 60:.1f} min)"


def render_summary(meta: dict[str, Any], steps: list[Step], report_markdown: str | None = None) -> str:
    """OUT/SUMMARY.md's text: machine, versions, the RULER table, the gates, the steps and their wall times."""
    out: list[str] = ["# RULER quantization study (GPU)", ""]
    for key in ("model", "checkpoint", "variants", "lengths", "tasks", "num_samples", "out", "started", "finished"):
        if key in meta:
            value = meta[key]
            if isinstance(value, (list, tuple)):
                value = ", ".join(map(str, value))
            out.append(f"- **{key.replace('_', ' ')}**: {value}")
    total = sum(s.wall_s or 0 for s in steps)
    out.append(f"- **wall time of the steps**: {_fmt_s(total)}")
    problems = [s for s in steps if s.status in ("failed", "interrupted")]
    if problems:
        out.append(f"- **problems**: {', '.join(f'{s.name} ({s.status}, exit {s.rc})' for s in problems)}")
    out += ["", "## Machine and versions", "", "| what | value |", "| :--- | :--- |"]
    facts = _facts(steps)
    for key, value in facts.items():
        out.append(f"| {key} | {value} |")
    if not facts:
        out.append("| – | not collected (see the steps below) |")

    compares = [s for s in steps if s.name.startswith("compare-")]
    out += ["", f"## Gate: recovery vs bf16 (compare --min-recovery {meta.get('min_recovery', MIN_RECOVERY)})", ""]
    if compares:
        out += ["| variant | verdict | recovery |", "| :--- | :--- | :--- |"]
        for s in compares:
            verdict, lines = _verdict(s)
            first = lines[0].replace("|", "\\|") if lines else "–"
            out.append(f"| {s.name.removeprefix('compare-')} | {verdict} | {first} |")
        details = [(s, _verdict(s)[1]) for s in compares]
        if any(len(lines) > 1 for _, lines in details):
            out.append("")
            for s, lines in details:
                for line in lines[1:]:
                    out.append(f"- {s.name.removeprefix('compare-')}: {line.removeprefix('- ')}")
    else:
        out.append("No compare ran.")

    out += ["", "## RULER table (lm-eval-ruler report)", ""]
    if meta.get("tasks") and len(meta["tasks"]) < 13:
        out += [
            (
                f"{len(meta['tasks'])} of RULER's 13 tasks ran, so the per-length score (the 13-task mean) shows as "
                "missing by design; the task rows and compare's recovery (over the tasks that ran) are the result."
            ),
            "",
        ]
    out.append(_demote(report_markdown).strip() if report_markdown else "(no report: see the steps below)")

    out += ["", "## Steps", "", "| # | step | status | exit | wall time | note |", "| ---: | :--- | :--- | ---: | ---: | :--- |"]
    for i, s in enumerate(steps, 1):
        rc = "–" if s.rc is None else str(s.rc)
        out.append(f"| {i} | {s.name} | {s.status} | {rc} | {_fmt_s(s.wall_s)} | {s.note.replace('|', '/')} |")
    failed = [s for s in steps if s.status in ("failed", "interrupted")]
    for s in failed:
        out += ["", f"### {s.name}: {s.status}, exit code {s.rc}", "", f"Log: `{s.log}`. Last lines:", "", "```"]
        out += [line[:400] for line in s.tail[-40:]] or ["(no output)"]
        out.append("```")
    out += ["", "## Commands, in order", "", "```bash"]
    out += [s.display() for s in steps]
    out += ["```", ""]
    return "\n".join(out)


def write_summary(out_dir: Path, meta: dict[str, Any], steps: list[Step]) -> Path:
    report = out_dir / "report.md"
    text = render_summary(meta, steps, report.read_text(encoding="utf-8") if report.is_file() else None)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "steps.json").write_text(json.dumps({"meta": meta, "steps": [s.as_json() for s in steps]}, indent=2) + "\n")
    path = out_dir / "SUMMARY.md"
    path.write_text(text, encoding="utf-8")
    return path


def export(out_dir: Path, dest: Path, max_log_bytes: int = 256 * 1024) -> None:
    """Copy the compact results (no sample logs, no checkpoints) to ``dest``, e.g. a device call's $OUT."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(out_dir.rglob("*")):
        rel = path.relative_to(out_dir)
        if not path.is_file() or rel.parts[0] in ("models",) or path.name.startswith("samples_"):
            continue
        if rel.parts[0] == "sweep" and not (path.suffix == ".json" or path.name.endswith(".log")):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".log" and path.stat().st_size > max_log_bytes:
            with open(path, "rb") as f:
                f.seek(-max_log_bytes, os.SEEK_END)
                target.write_bytes(b"[... cut: last %d bytes ...]\n" % max_log_bytes + f.read())
        else:
            shutil.copyfile(path, target)


# ---------------------------------------------------------------------------------------------
# the study

#: versions as the subprocess's Python sees them (the first distribution on sys.path wins, as for imports)
VERSIONS_SCRIPT = (
    "import json, platform, importlib.metadata as m; "
    'v = {(d.metadata["Name"] or "").lower().replace("_", "-"): d.version for d in reversed(list(m.distributions()))}; '
    'print(json.dumps({"python": platform.python_version(), **{n: v.get(n, "not installed") for n in '
    '("torch", "vllm", "lm-eval", "transformers", "compressed-tensors")}}))'
)
QUANT_VERSIONS_SCRIPT = (
    'import importlib.metadata as m; print("llmcompressor", m.version("llmcompressor"), '
    '"/ compressed-tensors", m.version("compressed-tensors"))'
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="study.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--model",
        help="an HF checkpoint folder (the bf16 baseline), or a .gguf to convert first "
        f"(default: the GGUF in the unpacked bundle, {BUNDLE}/model/*.gguf)",
    )
    ap.add_argument("--out", required=True, type=Path, help="output folder (models/, sweep/, reports, SUMMARY.md)")
    ap.add_argument("--lengths", help="comma-separated (default: those of 4k,8k the model's config has positions for)")
    ap.add_argument("--num-samples", type=int, default=500, help="samples per task and length (default 500)")
    ap.add_argument("--tasks", default=",".join(NON_QA_TASKS), help="comma-separated (default: the 11 non-QA tasks)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, bf16 first (default {','.join(VARIANTS)})")
    ap.add_argument("--python", default=sys.executable, help="the Python that has vLLM, lm-eval and torch (default: this one)")
    ap.add_argument(
        "--quant-python",
        default=None,
        help="the Python for quantize.py, e.g. a venv with llmcompressor beside the vLLM one (default: --python)",
    )
    ap.add_argument(
        "--quant-pythonpath",
        default=None,
        help="put first on PYTHONPATH for quantize.py (llm-compressor 0.14 + compressed-tensors 0.19; default "
        f"$GPU_STUDY_QUANT_SITE, else {BUNDLE}/quant-site when it exists, else nothing)",
    )
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"files for `lm_eval_ruler data import` (the essay corpus; default {BUNDLE}/data when it exists)",
    )
    ap.add_argument(
        "--extra-sweep-args",
        default="",
        help="more sweep arguments, one quoted string; write a lone flag as --extra-sweep-args=--no-progress",
    )
    ap.add_argument("--min-recovery", type=float, default=MIN_RECOVERY, help=f"compare's gate (default {MIN_RECOVERY})")
    ap.add_argument("--skip-existing", action="store_true", help="keep checkpoints already built in OUT/models")
    ap.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop cleanly after this long (the running step is interrupted, later ones skipped, the summary "
        "written); rerun with --skip-existing to continue (the sweep resumes its finished cells)",
    )
    ap.add_argument("--export", type=Path, default=None, help="at the end copy the compact results (no samples, no models) here")
    ap.add_argument("--dry-run", action="store_true", help="print every command in order; run and write nothing")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    out: Path = a.out.resolve()
    # subprocesses run in the checkout: a relative interpreter path is made absolute (not resolved: a venv's
    # python is a symlink that must stay one)
    py = os.path.abspath(a.python) if os.sep in a.python else a.python
    qpy = a.quant_python or py
    if os.sep in qpy:
        qpy = os.path.abspath(qpy)
    warnings: list[str] = []

    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants or variants[0] != "bf16" or len(set(variants)) != len(variants):
        print(
            f"error: --variants must start with bf16 (the baseline) and name each of {', '.join(VARIANTS)} once at most",
            file=sys.stderr,
        )
        return 2
    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]

    # the model: a .gguf is converted into OUT/models/bf16 first
    if a.model is None:
        found = sorted(BUNDLE.glob("model/*.gguf"))
        model = found[0] if found else BUNDLE / "model" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    else:
        model = Path(a.model).expanduser().resolve()
    is_gguf = model.suffix.lower() == ".gguf"
    if not model.exists():
        if not a.dry_run:
            print(
                f"error: no model at {model}: pass a local checkpoint folder or .gguf (for a hub model, download it "
                "first, e.g. `hf download ORG/NAME --local-dir DIR`: the variants copy its tokenizer files)",
                file=sys.stderr,
            )
            return 2
        warnings.append(f"{model} does not exist (dry run: the commands are printed anyway)")
    bf16 = out / "models" / "bf16" if is_gguf else model

    # lengths: the candidates that fit the model's positions
    if a.lengths:
        lengths, why = a.lengths, "--lengths"
    else:
        positions = gguf_context_length(model) if is_gguf else config_positions(model)
        lengths, why = default_lengths(positions)

    quant_path = a.quant_pythonpath
    if quant_path is None:
        quant_path = os.environ.get("GPU_STUDY_QUANT_SITE") or (
            str(BUNDLE / "quant-site") if (BUNDLE / "quant-site").is_dir() else ""
        )
    data_dir = a.data_dir if a.data_dir is not None else (BUNDLE / "data" if (BUNDLE / "data").is_dir() else None)

    # this checkout's plugin first on PYTHONPATH (it is not installed on the GPU machine)
    pythonpath = os.environ.get("PYTHONPATH", "")
    if str(REPO) not in pythonpath.split(os.pathsep):
        pythonpath = os.pathsep.join(p for p in (str(REPO), pythonpath) if p)
    os.environ["PYTHONPATH"] = pythonpath
    quant_env = {"PYTHONPATH": os.pathsep.join(p for p in (quant_path, pythonpath) if p)} if quant_path else {}

    meta: dict[str, Any] = {
        "model": str(model),
        "checkpoint": str(bf16),
        "variants": variants,
        "lengths": f"{lengths} ({why})",
        "tasks": tasks,
        "num_samples": a.num_samples,
        "out": str(out),
        "min_recovery": a.min_recovery,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    print(f"# RULER quantization study -> {out}{' (dry run: nothing is run or written)' if a.dry_run else ''}")
    print(f"# model {model}; variants {','.join(variants)}; lengths {lengths} ({why}); {len(tasks)} tasks x {a.num_samples}")
    print(f"# subprocesses run in {REPO} with PYTHONPATH={pythonpath}")
    for w in warnings:
        print(f"# warning: {w}")
    if not a.dry_run:
        out.mkdir(parents=True, exist_ok=True)

    r = Runner(out, a.dry_run, a.time_budget)
    try:
        # 1. facts
        r.run(Step("gpu", ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv"]))
        r.run(Step("versions", [py, "-c", VERSIONS_SCRIPT]))
        r.run(Step("plugin-version", [py, "-m", "lm_eval_ruler", "--version"]))
        if set(variants) & set(CHECKPOINT_VARIANTS):
            r.run(Step("llmcompressor-version", [qpy, "-c", QUANT_VERSIONS_SCRIPT], env=quant_env))

        # 2. data files (offline machine: the essay corpus travels in the bundle)
        if data_dir is not None:
            r.run(Step("data-import", [py, "-m", "lm_eval_ruler", "data", "import", str(data_dir)]))

        # 3. the bf16 checkpoint
        have = {"bf16": True}
        if is_gguf:
            step = Step("build-bf16", [py, str(HERE / "build_model.py"), "--gguf", str(model), "--out", str(bf16)], output=bf16)
            if a.skip_existing and (bf16 / "config.json").is_file():
                r.skip(step, "--skip-existing: the checkpoint is there")
            else:
                have["bf16"] = r.run(step).status in ("ok", "dry-run")
            if not a.lengths and not a.dry_run and config_positions(bf16):
                lengths2, why2 = default_lengths(config_positions(bf16))
                if lengths2 != lengths:
                    lengths, why = lengths2, why2
                    meta["lengths"] = f"{lengths} ({why})"

        # 4. quantized checkpoints
        paths = {"bf16": bf16, "fp8": bf16}
        for v in variants:
            if v not in CHECKPOINT_VARIANTS:
                continue
            dest = out / "models" / v
            paths[v] = dest
            step = Step(
                f"quantize-{v}",
                [qpy, str(HERE / "quantize.py"), "--model", str(bf16), "--scheme", v, "--out", str(dest)],
                env=quant_env,
                output=dest,
            )
            if a.skip_existing and (dest / "config.json").is_file():
                r.skip(step, "--skip-existing: the checkpoint is there")
                have[v] = True
            elif not have["bf16"]:
                r.skip(step, "no bf16 checkpoint (build-bf16 failed)")
                have[v] = False
            else:
                have[v] = r.run(step).status in ("ok", "dry-run")
        if "fp8" in variants:
            have["fp8"] = have["bf16"]

        # 5. one sweep over every variant whose checkpoint exists
        swept = [v for v in variants if have.get(v)]
        sweep_dir = out / "sweep"
        argv = [py, "-m", "lm_eval_ruler", "sweep"]
        for v in swept:
            argv += ["--model", f"{v}={paths[v]}"]
            for option in ONLINE_VARIANTS.get(v, ()):
                argv += ["--model-option", f"{v}:{option}"]
        argv += ["--lengths", lengths, "--tasks", ",".join(tasks), "--num-samples", str(a.num_samples)]
        argv += ["--model-arg", "enforce_eager=True", "--model-arg", "dtype=bfloat16", "--output", str(sweep_dir)]
        argv += shlex.split(a.extra_sweep_args)
        sweep = Step("sweep", argv, output=sweep_dir)
        missing = [v for v in variants if v not in swept]
        if not have["bf16"]:
            r.skip(sweep, "no bf16 checkpoint (build-bf16 failed)")
        else:
            if missing:
                sweep.note = f"without {', '.join(missing)} (its checkpoint failed)"
            r.run(sweep)

        # 6. report and gates: they read whatever the sweep finished, even after a partial failure
        def have_results(folder: Path) -> bool:
            return a.dry_run or (folder.is_dir() and any(folder.rglob("results_*.json")))

        reports = [
            Step(
                "report-html",
                [py, "-m", "lm_eval_ruler", "report", str(sweep_dir), "--format", "html", "--output", str(out / "report.html")],
                output=out / "report.html",
            ),
            Step(
                "report-markdown",
                [py, "-m", "lm_eval_ruler", "report", str(sweep_dir), "--format", "markdown", "--output", str(out / "report.md")],
                output=out / "report.md",
            ),
        ]
        for step in reports:
            if have_results(sweep_dir):
                r.run(step)
            else:
                r.skip(step, "the sweep wrote no results")
        for v in variants[1:]:
            step = Step(
                f"compare-{v}",
                [
                    py,
                    "-m",
                    "lm_eval_ruler",
                    "compare",
                    "--baseline",
                    str(sweep_dir / "bf16"),
                    "--candidate",
                    str(sweep_dir / v),
                    "--min-recovery",
                    f"{a.min_recovery:g}",
                    "--format",
                    "markdown",
                    "--output",
                    str(out / f"compare-{v}.md"),
                ],
                ok_codes=(0, 1),
                output=out / f"compare-{v}.md",
            )
            if have_results(sweep_dir / "bf16") and have_results(sweep_dir / v):
                r.run(step)
            else:
                r.skip(step, f"no results for {'bf16' if not have_results(sweep_dir / 'bf16') else v}")
    finally:
        for s in r.steps:
            if s.status == "pending":  # Ctrl-C
                s.status, s.note = "interrupted", "interrupted (KeyboardInterrupt)"
        meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        if a.dry_run:
            print(f"\n# dry run: {len(r.steps)} commands; then {out / 'SUMMARY.md'} would be written. Nothing was run.")
        else:
            path = write_summary(out, meta, r.steps)
            print(f"\n# summary: {path}")
            if a.export is not None:
                export(out, a.export.resolve())
                print(f"# compact results copied to {a.export}")
    bad = [s.name for s in r.steps if s.status in ("failed", "interrupted")]
    if bad:
        print(f"# not clean: {', '.join(bad)} (see SUMMARY.md)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
