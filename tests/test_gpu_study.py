"""benchmarks/gpu_study/study.py without a GPU: the dry run's commands, the control flow around failed
steps (with a stand-in for the GPU machine's Python), and the summary writer."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.scripts import load_script

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "benchmarks" / "gpu_study" / "study.py"
TASKS = "niah_single_1,niah_single_2,niah_single_3,niah_multikey_1,niah_multikey_2,niah_multikey_3,niah_multivalue,niah_multiquery,vt,cwe,fwe"


def _load_study():
    spec = importlib.util.spec_from_file_location("gpu_study_study", STUDY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up
    spec.loader.exec_module(module)
    return module


study = _load_study()


def _gguf(path: Path, context_length: int) -> Path:
    """A GGUF header (no tensors) with an array before the context length, as real files have."""

    def s(text: str) -> bytes:
        return struct.pack("<Q", len(text.encode())) + text.encode()

    kvs = [
        s("general.architecture") + struct.pack("<I", 8) + s("llama"),
        s("tokenizer.ggml.tokens") + struct.pack("<I", 9) + struct.pack("<IQ", 8, 2) + s("a") + s("bb"),
        s("tokenizer.ggml.scores") + struct.pack("<I", 9) + struct.pack("<IQ", 6, 2) + struct.pack("<ff", 0.1, 0.2),
        s("llama.context_length") + struct.pack("<I", 4) + struct.pack("<I", context_length),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))
    return path


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(STUDY), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {}), "GPU_STUDY_BUNDLE": "/nonexistent-bundle"},
        cwd=ROOT,
    )


def _commands(stdout: str) -> list[list[str]]:
    """The printed commands ("$ ..." lines), split as a shell would, env assignments included."""
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("$ ")]


def test_gguf_context_length(tmp_path):
    assert study.gguf_context_length(_gguf(tmp_path / "m.gguf", 8192)) == 8192
    (tmp_path / "bad.gguf").write_bytes(b"GGUF\x03")
    assert study.gguf_context_length(tmp_path / "bad.gguf") is None
    assert study.gguf_context_length(tmp_path / "missing.gguf") is None


def test_dry_run_from_a_gguf_prints_every_command_in_order(tmp_path):
    model = _gguf(tmp_path / "in" / "SmolLM2.gguf", 8192)
    (tmp_path / "in" / "data").mkdir()
    out = tmp_path / "out"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    r = _run(
        "--dry-run",
        "--out",
        str(out),
        "--model",
        str(model),
        "--data-dir",
        str(tmp_path / "in" / "data"),
        "--python",
        "/gpu/python3",
        "--quant-pythonpath",
        "/q/site",
    )
    assert r.returncode == 0, r.stderr
    # nothing written: not even the output folder
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before

    cmds = _commands(r.stdout)
    names = []
    for c in cmds:
        argv = [x for x in c if not x.startswith("PYTHONPATH=")]
        if argv[0] == "nvidia-smi":
            names.append("gpu")
        elif argv[1] == "-c":
            names.append("versions" if "llmcompressor" not in argv[2] else "llmcompressor-version")
        elif argv[1].endswith("build_model.py"):
            names.append("build")
        elif argv[1].endswith("quantize.py"):
            names.append(f"quantize-{argv[argv.index('--scheme') + 1]}")
        else:
            assert argv[:3] == ["/gpu/python3", "-m", "lm_eval_ruler"], c
            sub = argv[3]
            if sub == "report":
                sub += "-" + argv[argv.index("--format") + 1]
            elif sub == "compare":
                sub += "-" + Path(argv[argv.index("--candidate") + 1]).name
            elif sub == "data":
                sub += "-" + argv[4]
            names.append(sub)
    assert names == [
        "gpu",
        "versions",
        "--version",
        "llmcompressor-version",
        "data-import",
        "build",
        "quantize-w8a8",
        "quantize-w4a16",
        "sweep",
        "report-html",
        "report-markdown",
        "compare-fp8",
        "compare-w8a8",
        "compare-w4a16",
    ]

    bf16, w8a8, w4a16 = out / "models" / "bf16", out / "models" / "w8a8", out / "models" / "w4a16"
    build = cmds[names.index("build")]
    assert build[build.index("--gguf") + 1] == str(model) and build[build.index("--out") + 1] == str(bf16)
    for scheme, dest in (("w8a8", w8a8), ("w4a16", w4a16)):
        q = cmds[names.index(f"quantize-{scheme}")]
        assert q[0].startswith("PYTHONPATH=/q/site" + os.pathsep), q[0]  # quant-site first, for this step only
        assert q[q.index("--model") + 1] == str(bf16) and q[q.index("--out") + 1] == str(dest)

    sweeps = [c for c in cmds if c[1:4] == ["-m", "lm_eval_ruler", "sweep"]]
    assert len(sweeps) == 1
    sweep = sweeps[0]
    assert [sweep[i + 1] for i, x in enumerate(sweep) if x == "--model"] == [
        f"bf16={bf16}",
        f"fp8={bf16}",
        f"w8a8={w8a8}",
        f"w4a16={w4a16}",
    ]
    assert [sweep[i + 1] for i, x in enumerate(sweep) if x == "--model-option"] == ["fp8:quantization=fp8"]
    assert [sweep[i + 1] for i, x in enumerate(sweep) if x == "--model-arg"] == ["enforce_eager=True", "dtype=bfloat16"]
    assert sweep[sweep.index("--lengths") + 1] == "4k,8k"  # the GGUF says 8192 positions
    assert sweep[sweep.index("--tasks") + 1] == TASKS
    assert sweep[sweep.index("--num-samples") + 1] == "500"
    assert sweep[sweep.index("--output") + 1] == str(out / "sweep")

    html, md = cmds[names.index("report-html")], cmds[names.index("report-markdown")]
    assert html[4] == md[4] == str(out / "sweep")
    assert html[html.index("--output") + 1] == str(out / "report.html")
    for v in ("fp8", "w8a8", "w4a16"):
        c = cmds[names.index(f"compare-{v}")]
        assert c[c.index("--baseline") + 1] == str(out / "sweep" / "bf16")
        assert c[c.index("--candidate") + 1] == str(out / "sweep" / v)
        assert c[c.index("--min-recovery") + 1] == "99"
        assert c[c.index("--format") + 1] == "markdown"


def test_dry_run_from_a_checkpoint_folder(tmp_path):
    model = tmp_path / "ckpt"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    out = tmp_path / "out"
    r = _run(
        "--dry-run",
        "--out",
        str(out),
        "--model",
        str(model),
        "--variants",
        "bf16,fp8",
        "--num-samples",
        "20",
        "--extra-sweep-args",
        "--no-progress --seed 7",
    )
    assert r.returncode == 0, r.stderr
    assert not out.exists()
    cmds = _commands(r.stdout)
    assert not any(c[1].endswith(("build_model.py", "quantize.py")) for c in cmds if len(c) > 1)
    assert not any("llmcompressor" in " ".join(c) for c in cmds)
    (sweep,) = [c for c in cmds if c[1:4] == ["-m", "lm_eval_ruler", "sweep"]]
    assert [sweep[i + 1] for i, x in enumerate(sweep) if x == "--model"] == [f"bf16={model}", f"fp8={model}"]
    assert sweep[sweep.index("--lengths") + 1] == "4k"  # 8k does not fit 4096 positions
    assert sweep[sweep.index("--num-samples") + 1] == "20"
    assert sweep[-3:] == ["--no-progress", "--seed", "7"]
    assert [c[c.index("--candidate") + 1] for c in cmds if "compare" in c] == [str(out / "sweep" / "fp8")]


@pytest.mark.parametrize("variants", ["fp8,bf16", "bf16,int3", "bf16,fp8,fp8"])
def test_bad_variants(tmp_path, variants):
    r = _run("--dry-run", "--out", str(tmp_path / "o"), "--model", str(tmp_path), "--variants", variants)
    assert r.returncode == 2 and "--variants" in r.stderr


FAKE_PYTHON = """\
#!{python}
# Stands in for the GPU machine's Python: answers study.py's subprocesses without vLLM or a model.
import json, sys
from pathlib import Path
a = sys.argv[1:]
def opt(name):
    return a[a.index(name) + 1]
if a[0] == "-c":
    print("llmcompressor 0.14.0.1 / compressed-tensors 0.19.0" if "llmcompressor" in a[1] else
          json.dumps({{"python": "3.12.3", "torch": "2.11.0+cu130", "vllm": "0.26.0", "lm-eval": "0.4.13"}}))
elif a[0].endswith("quantize.py"):
    if opt("--scheme") == "w4a16":
        print("RuntimeError: group size 64 does not divide 576", file=sys.stderr)
        sys.exit(5)
    Path(opt("--out")).mkdir(parents=True)
    (Path(opt("--out")) / "config.json").write_text("{{}}")
elif a[:2] == ["-m", "lm_eval_ruler"]:
    sub = a[2]
    if sub == "--version":
        print("lm-eval-ruler 0.1.0 (lm-eval 0.4.13)")
    elif sub == "sweep":
        if "--slow" in a:
            import time
            time.sleep(120)
        for i, x in enumerate(a):
            if x == "--model":
                label = a[i + 1].split("=")[0]
                (Path(opt("--output")) / label / "4k").mkdir(parents=True)
                (Path(opt("--output")) / label / "4k" / "results_1.json").write_text("{{}}")
    elif sub == "report":
        Path(opt("--output")).write_text("# RULER report\\n\\n| Model | 4K |\\n| :--- | ---: |\\n| bf16 | 91.0 |\\n")
    elif sub == "compare":
        v = Path(opt("--candidate")).name
        if v == "fp8":
            print("PASS  fp8 vs bf16: recovery 99.80% (min 99.00%), Δ -0.18 [-0.50, +0.10] over 4K [paired-bootstrap]")
        else:
            print("FAIL  w8a8 vs bf16: recovery 97.10% (min 99.00%), Δ -2.64 [-3.10, -2.20] over 4K [paired-bootstrap]")
            print("  - overall recovery 97.10% over 4K is below the required 99.00% (baseline 91.0, candidate 88.4)")
            sys.exit(1)
"""


def fake_python_and_checkpoint(tmp_path):
    """A stand-in for the GPU machine's python3 (prints what each step would), an 8K checkpoint, an output folder."""
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    model = tmp_path / "ckpt"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 8192}))
    return fake, model, tmp_path / "out"


def test_failed_steps_are_recorded_and_independent_steps_still_run(tmp_path):
    fake, model, out = fake_python_and_checkpoint(tmp_path)
    r = _run(
        "--out",
        str(out),
        "--model",
        str(model),
        "--python",
        str(fake),
        "--lengths",
        "4k",
        "--export",
        str(tmp_path / "export"),
        env={"PATH": "/nonexistent"},
    )  # no nvidia-smi either
    assert r.returncode == 1, r.stdout + r.stderr  # not clean: gpu and quantize-w4a16 failed
    (sweep,) = [c for c in _commands(r.stdout) if c[1:4] == ["-m", "lm_eval_ruler", "sweep"]]
    assert [sweep[i + 1] for i, x in enumerate(sweep) if x == "--model"] == [
        f"bf16={model}",
        f"fp8={model}",
        f"w8a8={out / 'models' / 'w8a8'}",
    ]
    steps = {s["name"]: s for s in json.loads((out / "steps.json").read_text())["steps"]}
    assert steps["gpu"]["status"] == "failed" and steps["gpu"]["rc"] == 127
    assert steps["quantize-w4a16"]["status"] == "failed" and steps["quantize-w4a16"]["rc"] == 5
    assert steps["sweep"]["status"] == "ok" and "without w4a16" in steps["sweep"]["note"]
    assert steps["compare-fp8"]["status"] == "ok"
    assert steps["compare-w8a8"]["status"] == "gate-failed" and steps["compare-w8a8"]["rc"] == 1
    assert steps["compare-w4a16"]["status"] == "skipped"
    assert all(s["wall_s"] is not None for s in steps.values() if s["status"] not in ("skipped",))

    summary = (out / "SUMMARY.md").read_text()
    assert "### quantize-w4a16: failed, exit code 5" in summary
    assert "RuntimeError: group size 64 does not divide 576" in summary
    assert "| w8a8 | FAIL (gate) | FAIL  w8a8 vs bf16: recovery 97.10%" in summary
    assert "| fp8 | PASS | PASS  fp8 vs bf16: recovery 99.80%" in summary
    assert "| w4a16 | not run |" in summary
    assert "| bf16 | 91.0 |" in summary  # the report's table
    assert "| vllm | 0.26.0 |" in summary and "| lm-eval-ruler --version | lm-eval-ruler 0.1.0 (lm-eval 0.4.13) |" in summary
    exported = sorted(str(p.relative_to(tmp_path / "export")) for p in (tmp_path / "export").rglob("*") if p.is_file())
    assert "SUMMARY.md" in exported and "report.md" in exported and "sweep/bf16/4k/results_1.json" in exported
    assert not any(p.startswith("models") for p in exported)


def test_summary_writer_on_fake_steps(tmp_path):
    Step = study.Step
    steps = [
        Step(
            "gpu",
            ["nvidia-smi"],
            status="ok",
            rc=0,
            wall_s=0.1,
            tail=["name, memory.total [MiB]", "NVIDIA H100 80GB HBM3, 81559 MiB"],
        ),
        Step(
            "versions",
            ["python3", "-c", "..."],
            status="ok",
            rc=0,
            wall_s=0.2,
            tail=['{"python": "3.12.3", "torch": "2.11.0+cu130", "vllm": "0.26.0"}'],
        ),
        Step("build-bf16", ["python3", "build_model.py"], status="ok", rc=0, wall_s=21.4),
        Step(
            "sweep",
            ["python3", "-m", "lm_eval_ruler", "sweep"],
            status="failed",
            rc=3,
            wall_s=812.0,
            log=tmp_path / "logs" / "05-sweep.log",
            tail=["cell w4a16/8k failed", "RuntimeError: CUDA out of memory"],
        ),
        Step(
            "compare-fp8",
            ["python3", "-m", "lm_eval_ruler", "compare"],
            ok_codes=(0, 1),
            status="gate-failed",
            rc=1,
            wall_s=3.0,
            tail=["FAIL  fp8 vs bf16: recovery 98.50% (min 99.00%)", "  - the drop is significant"],
        ),
        Step(
            "compare-w8a8",
            ["python3", "-m", "lm_eval_ruler", "compare"],
            status="failed",
            rc=2,
            wall_s=1.0,
            tail=["error: runs differ: tokenizer"],
        ),
        Step("compare-w4a16", ["python3", "-m", "lm_eval_ruler", "compare"], status="skipped", note="no results for w4a16"),
    ]
    meta = {"model": "/m.gguf", "variants": ["bf16", "fp8", "w8a8", "w4a16"], "tasks": TASKS.split(","), "num_samples": 500}
    path = study.write_summary(tmp_path, meta, steps)
    text = path.read_text()
    assert "| GPU | NVIDIA H100 80GB HBM3, 81559 MiB |" in text
    assert "| torch | 2.11.0+cu130 |" in text
    assert "| 4 | sweep | failed | 3 | 812 s (13.5 min) |" in text
    assert "### sweep: failed, exit code 3" in text and "RuntimeError: CUDA out of memory" in text
    assert "| fp8 | FAIL (gate) | FAIL  fp8 vs bf16: recovery 98.50% (min 99.00%) |" in text
    assert "- fp8: the drop is significant" in text
    assert "| w8a8 | ERROR (exit 2) | error: runs differ: tokenizer |" in text
    assert "| w4a16 | not run | – |" in text
    assert "11 of RULER's 13 tasks ran" in text and "(no report" in text
    assert "problems**: sweep (failed, exit 3), compare-w8a8 (failed, exit 2)" in text
    saved = json.loads((tmp_path / "steps.json").read_text())
    assert [s["status"] for s in saved["steps"]] == [s.status for s in steps]

    (tmp_path / "report.md").write_text("# RULER report\n\n## RULER scores\n\n| Model | 4K |\n")
    text = study.write_summary(tmp_path, meta, steps).read_text()
    assert "### RULER report" in text and "#### RULER scores" in text  # demoted under the summary's headings


def test_study_uses_only_the_standard_library():
    """study.py runs on the GPU machine before anything is installed there, and in CI without vLLM."""
    code = textwrap.dedent(
        f"""
        import sys, importlib.util
        before = set(sys.modules)
        spec = importlib.util.spec_from_file_location("s", {str(STUDY)!r})
        m = importlib.util.module_from_spec(spec); sys.modules["s"] = m; spec.loader.exec_module(m)
        new = {{n.split(".")[0] for n in set(sys.modules) - before}} - {{"s"}}
        bad = sorted(n for n in new if n not in sys.stdlib_module_names and not n.startswith("_"))
        print(bad)
        """
    )
    r = subprocess.run([sys.executable, "-I", "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_quantization_can_use_its_own_python(tmp_path):
    model = tmp_path / "ckpt"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 8192}))
    r = _run(
        "--dry-run",
        "--out",
        str(tmp_path / "out"),
        "--model",
        str(model),
        "--variants",
        "bf16,w8a8",
        "--python",
        "/gpu/python3",
        "--quant-python",
        "/q/bin/python",
        "--quant-pythonpath",
        "",
    )
    assert r.returncode == 0, r.stderr
    cmds = _commands(r.stdout)
    quant = [c for c in cmds if "llmcompressor" in " ".join(c) or (len(c) > 1 and c[1].endswith("quantize.py"))]
    assert [c[0] for c in quant] == ["/q/bin/python", "/q/bin/python"]  # the version check and quantize-w8a8
    (sweep,) = [c for c in cmds if c[1:4] == ["-m", "lm_eval_ruler", "sweep"]]
    assert sweep[0] == "/gpu/python3"


def test_time_budget_stops_cleanly_and_writes_the_summary(tmp_path):
    fake, model, out = fake_python_and_checkpoint(tmp_path)
    r = _run(
        "--out",
        str(out),
        "--model",
        str(model),
        "--python",
        str(fake),
        "--variants",
        "bf16,fp8",
        "--extra-sweep-args=--slow",
        "--time-budget",
        "8",
    )
    assert r.returncode == 1, r.stdout + r.stderr
    steps = {s["name"]: s for s in json.loads((out / "steps.json").read_text())["steps"]}
    assert steps["sweep"]["status"] == "interrupted" and steps["sweep"]["wall_s"] < 60
    assert steps["compare-fp8"]["status"] == "skipped"
    assert "rerun" in steps["compare-fp8"]["note"]
    assert "### sweep: interrupted" in (out / "SUMMARY.md").read_text()


def _dump(moment: float, pid: int, frames: list[str], building: list[str] = ()) -> str:
    stack = "\n".join(f"    {frame}" for frame in frames)
    builder = "".join(f"    {frame}\n" for frame in building)
    return (f"=== {moment} pid {pid}\nProcess {pid}: python3 -m lm_eval_ruler run\n\n"
            f'Thread {pid} (idle): "MainThread"\n{stack}\nThread 9 (idle): "tqdm_monitor"\n    VLLM.tok_encode (x.py:1)\n'
            + (f'Thread 0x7F01 (active): "vllm-engine-build"\n{builder}' if building else ""))


def test_phases_from_a_stack_timeline(tmp_path):
    """Each dump's main-thread stack names a phase; the time to the next dump is charged to it, and the cell's
    wall time before the first and after the last dump to start-up and shutdown. Other threads are ignored."""
    phases = load_script("gpu_study/phases.py")
    base = 1_796_565_500.0
    stacks = [
        (0, ["_find_and_load (<frozen importlib._bootstrap>:1)", "main (lm_eval_ruler/cli.py:1)"]),
        (2, ["RulerTask.download (lm_eval_ruler/harness.py:1)"]),
        (3, ["<module> (lm_eval/models/vllm_causallms.py:1)", "Registry.get (lm_eval/api/registry.py:1)"]),
        (10, ["LLM.__init__ (vllm/entrypoints/llm.py:338)", "VLLM.__init__ (lm_eval/models/vllm_causallms.py:154)"]),
        (15, ["TokenizersBackend._encode_plus (x.py:1)", "VLLM.tok_encode (lm_eval/models/vllm_causallms.py:1)"]),
        (18, ["LLM.generate (vllm/entrypoints/llm.py:465)", "VLLM._model_generate (lm_eval/models/vllm_causallms.py:458)"]),
        (48, ["score_sample (lm_eval_ruler/metrics.py:1)"]),
        (49, ["EvaluationTracker.save_results_samples (lm_eval/loggers/evaluation_tracker.py:1)"]),
        (52, ["Run._execute (lm_eval/_cli/run.py:395)"]),
    ]
    path = tmp_path / "stacks.txt"
    path.write_text("".join(_dump(base + offset, 4242, frames) for offset, frames in stacks))
    cell = tmp_path / "sweep" / "bf16" / "4k"
    cell.mkdir(parents=True)
    started = "2026-12-06T13:58:15+00:00"
    start = __import__("datetime").datetime.fromisoformat(started).timestamp()
    (cell / "cell.json").write_text(json.dumps({"pid": 4242, "started": started, "seconds": base + 55 - start,
                                                "label": "bf16", "length": "4k"}))
    found = phases.cell_phases(phases.read_dumps(path)[4242], start, base + 55 - start)
    assert round(found[phases.START]) == round(base - start) + 2
    assert found["tasks: data from the cache, requests"] == 1
    assert found["import vLLM"] == 7
    assert found["vLLM load"] == 5
    assert found["tokenizing prompts (lm-eval)"] == 3
    assert found["generation"] == 30
    assert found["scoring"] == 1
    assert found["saving, environment info"] == 3
    assert round(found[phases.SHUTDOWN]) == 3
    table = phases.table(path, [tmp_path / "sweep"])
    assert "| phase | bf16 @ 4k |" in table
    assert "| generation | 30 s |" in table
    assert table.splitlines()[-1].startswith("| everything but vLLM load and generation | ")


def test_phases_split_a_worker_timeline_into_its_cells(tmp_path):
    """A worker runs two cells on one pid: each cell gets the dumps between its start and end, the dumps before its
    first cell (imports while the sweep prepares data) get their own column, and waiting for a cell is idle time."""
    phases = load_script("gpu_study/phases.py")
    base = 1_796_565_500.0
    worker = "main (lm_eval_ruler/_cell_worker.py:1)"
    in_cell = ["_run_cell (lm_eval_ruler/_cell_worker.py:1)", worker]
    stacks = [
        (0, ["_find_and_load (<frozen importlib._bootstrap>:1)", "_prepare (lm_eval_ruler/_cell_worker.py:1)", worker]),
        (4, ["_find_and_load (<frozen importlib._bootstrap>:1)", "_prepare (lm_eval_ruler/_cell_worker.py:1)", worker]),
        (6, ["readline (<frozen codecs>:1)", worker]),
        (10, ["LLM.__init__ (vllm/entrypoints/llm.py:338)", *in_cell]),
        (14, ["VLLM.tok_encode (lm_eval/models/vllm_causallms.py:1)", *in_cell]),
        (16, ["SamplingParams.__post_init__ (vllm/sampling_params.py:1)", "VLLM.generate_until (lm_eval/models/vllm_causallms.py:1)", *in_cell]),
        (17, ["LLM.generate (vllm/entrypoints/llm.py:465)", "VLLM._model_generate (lm_eval/models/vllm_causallms.py:1)", *in_cell]),
        (40, ["VLLM.tok_encode (lm_eval/models/vllm_causallms.py:1)", *in_cell]),
        (42, ["LLM.generate (vllm/entrypoints/llm.py:465)", "VLLM._model_generate (lm_eval/models/vllm_causallms.py:1)", *in_cell]),
        (60, ["EvaluationTracker.save_results_samples (lm_eval/loggers/evaluation_tracker.py:1)", *in_cell]),
    ]
    path = tmp_path / "stacks.txt"
    path.write_text("".join(_dump(base + offset, 77, frames) for offset, frames in stacks))
    import datetime as dt

    for length, offset, seconds in (("4k", 10, 30), ("8k", 40, 22)):
        cell = tmp_path / "sweep" / "m" / length
        cell.mkdir(parents=True)
        started = dt.datetime.fromtimestamp(base + offset, dt.timezone.utc).isoformat()
        (cell / "cell.json").write_text(json.dumps({"pid": 77, "started": started, "seconds": seconds, "label": "m", "length": length}))
    columns = dict(phases.columns_of(phases.read_dumps(path), phases.sweep_cells(tmp_path / "sweep")))
    assert list(columns) == ["m @ 4k", "m @ 8k", "worker 77 before its first cell"]
    first, second = columns["m @ 4k"], columns["m @ 8k"]
    assert first["vLLM load"] == 4 and first["tokenizing prompts (lm-eval)"] == 2 and first["generation"] == 23
    assert first["vLLM requests: sampling parameters (lm-eval)"] == 1 and sum(first.values()) == 30
    assert second["tokenizing prompts (lm-eval)"] == 2 and second["generation"] == 18 and "vLLM load" not in second
    assert round(second[phases.SHUTDOWN]) == 2 and sum(second.values()) == 22
    assert columns["worker 77 before its first cell"] == {phases.START: 6, phases.IDLE: 4}


def test_phases_charge_a_cell_working_during_the_engine_load_to_the_load(tmp_path):
    """The worker builds the engine on a thread: while that thread is in vLLM's load, the dump is the load's
    whatever the main thread does, and the main thread's own work meanwhile is counted apart as hidden."""
    phases = load_script("gpu_study/phases.py")
    worker = ["_run_cell (lm_eval_ruler/_cell_worker.py:1)", "main (lm_eval_ruler/_cell_worker.py:1)"]
    loading = ["EngineCoreClient.make_client (vllm/v1/engine/core_client.py:1)", "LLM.__init__ (vllm/entrypoints/llm.py:338)",
               "_EngineBeingBuilt._build (lm_eval_ruler/_cell_worker.py:1)"]  # fmt: skip
    stacks = [
        (0, ["RulerTask.download (lm_eval_ruler/harness.py:1)", *worker], loading),
        (3, ["VLLM.tok_encode (lm_eval/models/vllm_causallms.py:1)", *worker], loading),
        (5, ["wait (threading.py:1)", "_EngineBeingBuilt.result (lm_eval_ruler/_cell_worker.py:1)",
             "VLLM._model_generate (lm_eval/models/vllm_causallms.py:1)", *worker], loading),
        (9, ["LLM.generate (vllm/entrypoints/llm.py:465)", "VLLM._model_generate (lm_eval/models/vllm_causallms.py:1)", *worker], []),
        (20, ["EvaluationTracker.save_results_samples (lm_eval/loggers/evaluation_tracker.py:1)", *worker], []),
        (21, ["EvaluationTracker.save_results_samples (lm_eval/loggers/evaluation_tracker.py:1)", *worker], []),
    ]
    path = tmp_path / "stacks.txt"
    path.write_text("".join(_dump(1_796_565_500.0 + offset, 5, frames, building) for offset, frames, building in stacks))
    found = phases.cell_phases(phases.read_dumps(path)[5], None, None)
    assert found == {"vLLM load": 9, phases.HIDDEN: 5, "generation": 11, "saving, environment info": 1}
    assert "tokenizing prompts (lm-eval)" not in found and "tasks: data from the cache, requests" not in found
