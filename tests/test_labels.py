"""``LABEL=PATH`` names runs everywhere: sweep folders too, and plot files stay one per run.

The runs are the hand-written fixtures under tests/fixtures/results/pair (see its README). A
sweep folder is faked the way ``lm_eval_ruler.report.load_sweep`` reads one: a ``done``
``cell.json`` per ``<root>/<model-slug>/<length>/`` naming its results file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lm_eval_ruler.report.cli import main as report_cli
from lm_eval_ruler.report.plots import _unique_stem
from lm_eval_ruler.report.sweep_folder import CELL_FILE
from lm_eval_ruler.sweep import model_slug

PAIR = Path(__file__).parent / "fixtures" / "results" / "pair"
BASELINE = PAIR / "baseline"
DROP = PAIR / "candidate_drop"
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
W4A16 = "RedHatAI/Meta-Llama-3.1-8B-Instruct-quantized.w4a16"


def fake_sweep(root: Path, *models: tuple[str, Path]) -> Path:
    """A sweep output folder with one finished 4k cell per model, holding that fixture run's files."""
    for index, (model, source) in enumerate(models):
        cell = root / model_slug(model) / "4k"
        [folder] = [d for d in source.iterdir() if d.is_dir()]
        shutil.copytree(folder, cell / "lm_eval")
        [results] = sorted((cell / "lm_eval").glob("results_*.json"))
        state = {"status": "done", "model": model, "cell_index": index, "results_file": f"lm_eval/{results.name}"}
        (cell / CELL_FILE).write_text(json.dumps(state))
    return root


def report_text(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert report_cli(["report", *args]) == 0
    return capsys.readouterr().out


def test_label_names_a_one_model_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    sweep = fake_sweep(tmp_path / "sweep", (LLAMA, BASELINE))
    plain = report_text([str(sweep)], capsys)
    assert f"| {LLAMA} |" in plain
    labelled = report_text([f"mine={sweep}", "--format", "csv"], capsys)
    rows = labelled.splitlines()[1:]
    assert rows and all(row.startswith("table,mine,") for row in rows)
    assert LLAMA not in labelled


def test_label_prefixes_each_model_of_a_several_model_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    sweep = fake_sweep(tmp_path / "sweep", (LLAMA, BASELINE), (W4A16, DROP))
    text = report_text([f"grid={sweep}"], capsys)
    assert f"| grid/{LLAMA} |" in text and f"| grid/{W4A16} |" in text
    # One model's folder inside the sweep is a one-model sweep: the label is the whole name.
    text = report_text([f"q={sweep / model_slug(W4A16)}"], capsys)
    assert "| q |" in text and "grid" not in text


def test_compare_honours_labels_of_sweep_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    base = fake_sweep(tmp_path / "base", (LLAMA, BASELINE))
    cand = fake_sweep(tmp_path / "cand", (W4A16, DROP))
    args = ["compare", "--baseline", f"bf16={base}", "--candidate", f"w4={cand}", "--method", "stderr"]
    assert report_cli(args) == 1  # the drop candidate fails the gate
    captured = capsys.readouterr()
    assert "w4" in captured.out and "bf16" in captured.out and W4A16 not in captured.out
    assert "FAIL  w4 vs bf16:" in captured.err


def test_unique_stem_never_reuses_a_name_in_one_call():
    used: set[str] = set()
    stems = [_unique_stem(stem, used) for stem in ("a", "a", "a_2", "A", "b")]
    assert stems == ["a", "a_2", "a_2_2", "A_3", "b"]


def test_plots_of_two_runs_of_one_model_are_distinct_files(tmp_path: Path):
    """Unlabelled, both runs are named after the model: the second plot gets _2 instead of overwriting."""
    plots = tmp_path / "plots"
    assert report_cli(["report", str(BASELINE), str(BASELINE), "--plots", str(plots)]) == 0
    stem = "niah_depth_meta-llama_Llama-3.1-8B-Instruct"
    assert sorted(p.name for p in plots.iterdir()) == sorted(
        f"{name}.{ext}" for name in ("ruler_scores", stem, f"{stem}_2") for ext in ("png", "svg")
    )


def test_plots_are_named_by_sweep_labels(tmp_path: Path):
    sweep = fake_sweep(tmp_path / "sweep", (LLAMA, BASELINE))
    plots = tmp_path / "plots"
    assert report_cli(["report", f"run1={sweep}", f"run2={sweep}", "--plots", str(plots)]) == 0
    names = sorted(p.name for p in plots.iterdir())
    assert names == sorted(f"{n}.{e}" for n in ("ruler_scores", "niah_depth_run1", "niah_depth_run2") for e in ("png", "svg"))
