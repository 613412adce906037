"""Reports from lm-eval results: RULER tables, recovery with intervals, the CI gate, outputs and plots.

Fixtures under tests/fixtures/results/ are hand-written in lm-eval 0.4.13's
results layout (see the README there): a Llama-3.1-8B sweep reproducing the
published RULER row, a partial run, and a baseline with two candidates whose
sample logs differ from it in a known set of documents.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lm_eval_ruler._tasks import CATEGORIES, LENGTHS, STANDARD_LENGTHS, TASKS
from lm_eval_ruler.errors import RulerError
from lm_eval_ruler.report import (
    ReportError,
    Run,
    TaskResult,
    compare,
    effective_length,
    gate,
    github_summary,
    load_run,
    plot_depth_heatmap,
    plot_scores,
    ruler_table,
    save_plots,
    select_lengths,
    to_csv,
    to_html,
    to_json,
    to_markdown,
)
from lm_eval_ruler.report.cli import main as report_cli

FIXTURES = Path(__file__).parent / "fixtures" / "results"
LLAMA = FIXTURES / "llama-3.1-8b"
PARTIAL = FIXTURES / "partial"
PAIR = FIXTURES / "pair"
BASELINE = PAIR / "baseline"
NOISE = PAIR / "candidate_noise"
DROP = PAIR / "candidate_drop"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def synthetic_run(name: str, row: list[float]) -> Run:
    """A run whose 13 tasks all score the row value at each standard length."""
    results = {
        (task, LENGTHS[length]): TaskResult(task, LENGTHS[length], f"ruler_{task}_{length}", score, 0.5, 500, {}, Path("x"))
        for length, score in zip(STANDARD_LENGTHS, row)
        for task in TASKS
    }
    return Run(name, Path("."), (), results, {}, {})


def copy_run(source: Path, target: Path) -> Path:
    """A writable copy of a fixture run; returns the model folder inside it."""
    shutil.copytree(source, target)
    [folder] = [d for d in target.iterdir() if d.is_dir()]
    return folder


def edit_results(folder: Path, edit) -> None:
    [path] = sorted(folder.glob("results_*.json"))[-1:]
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# --------------------------------------------------------------------------- (a) the published Llama-3.1-8B row


def test_llama_sweep_reproduces_published_row():
    run = load_run(LLAMA)
    # Three files: an older 4K file (all 50.0) that the newer sweep files override.
    assert len(run.files) == 3 and len(run.results) == 78
    table = ruler_table(run)
    assert [(row.label, round(row.score, 1)) for row in table.rows] == [
        ("4K", 95.5), ("8K", 93.8), ("16K", 91.6), ("32K", 87.4), ("64K", 84.7), ("128K", 77.0),
    ]  # fmt: skip
    # Hand-checked: (95.5+93.8+91.6+87.4+84.7+77.0)/6 = 88.33; sum i*s_i / 21 = 85.38; sum (7-i)*s_i / 21 = 91.29
    assert f"{table.avg:.1f}" == "88.3" and table.avg == pytest.approx(530.0 / 6)
    assert f"{table.wavg_inc:.1f}" == "85.4" and table.wavg_inc == pytest.approx(1793.0 / 21)
    assert f"{table.wavg_dec:.1f}" == "91.3" and table.wavg_dec == pytest.approx(1917.0 / 21)
    assert table.effective_length == "32K"  # 87.4 > 85.6 at 32K, 84.7 fails at 64K
    # NoLiMa-style: 85% of 95.5 = 81.2; 84.7 at 64K stays above it, 77.0 at 128K does not.
    assert table.relative_effective_length == "64K" and table.base_score == pytest.approx(95.5)
    assert table.rows[0].categories == {c: pytest.approx(95.5) for c in CATEGORIES}
    markdown = to_markdown(table)
    assert "| 32K | 64K | 95.5 | 93.8 | 91.6 | 87.4 | 84.7 | 77.0 | 88.3 | 85.4 | 91.3 |" in markdown


def test_group_rows_are_ignored():
    """The fixture's group rows (ruler_4k, ruler_niah_4k ...) say 0.0; nothing may read them."""
    data = json.loads(next(iter(sorted((LLAMA / "meta-llama__Llama-3.1-8B-Instruct").glob("results_*.json")))).read_text())
    assert data["results"]["ruler_4k"]["score,none"] == 0.0
    assert all(result.score > 50 for result in load_run(LLAMA).results.values())


# Published rows (ruler-spec §11.1): 4K..128K, effective length, Avg, wAvg inc, wAvg dec.
PUBLISHED = {
    "Llama-3.1-70B-Instruct": ([96.5, 95.8, 95.4, 94.8, 88.4, 66.6], "64K", "89.6", "85.5", "93.7"),
    "Gemini-1.5-pro": ([96.7, 95.8, 96.0, 95.9, 95.9, 94.4], ">128K", "95.8", "95.5", "96.1"),
    "GPT-4-1106-preview": ([96.6, 96.3, 95.2, 93.2, 87.0, 81.2], "64K", "91.6", "89.0", "94.1"),
    "Mistral-7B-Instruct-v0.2": ([93.6, 91.2, 87.2, 75.4, 49.0, 13.8], "16K", "68.4", "55.6", "81.2"),
    "Mixtral-8x22B-Instruct": ([95.6, 94.9, 93.4, 90.9, 84.7, 31.7], "32K", "81.9", "73.5", "90.3"),
    "LWM-Text-Chat-1M": ([82.3, 78.4, 73.7, 69.1, 68.1, 65.0], "<4K", "72.8", "69.9", "75.7"),
}


@pytest.mark.parametrize("model", PUBLISHED)
def test_published_rows(model: str):
    row, effective, avg, inc, dec = PUBLISHED[model]
    table = ruler_table(synthetic_run(model, row))
    assert table.effective_length == effective
    assert (f"{table.avg:.1f}", f"{table.wavg_inc:.1f}", f"{table.wavg_dec:.1f}") == (avg, inc, dec)


def test_effective_length_rules():
    k = 1024
    assert effective_length({4 * k: 85.6, 8 * k: 90.0}, 85.6) == ">8K"  # "exceeds": 85.6 itself fails, later pass counts
    assert effective_length({4 * k: 85.6}, 85.6) == "<4K"
    assert effective_length({4 * k: 90.0, 8 * k: 80.0, 16 * k: 86.0, 32 * k: 70.0}, 85.6) == "16K"  # literal rule
    assert effective_length({}, 85.6) is None
    assert effective_length({4 * k: 100.0, 8 * k: 85.0}, 85.0, inclusive=True) == ">8K"


# --------------------------------------------------------------------------- (b) partial runs


def test_partial_run_shows_missing_never_zero():
    table = ruler_table(load_run(PARTIAL))
    assert [row.label for row in table.rows] == ["4K", "8K", "16K", "100000"]  # the custom length lands on its tokens
    four, eight, sixteen, custom = table.rows
    assert four.score == pytest.approx(90.0) and four.complete
    assert eight.score is None and eight.missing == ("cwe", "qa_hotpot")
    assert eight.categories["retrieval"] == pytest.approx(80.0) and eight.categories["multi_hop"] == pytest.approx(80.0)
    assert eight.categories["aggregation"] is None and eight.categories["qa"] is None
    assert eight.tasks["cwe"] is None and eight.tasks["fwe"] == pytest.approx(80.0)
    assert sixteen.score is None and sixteen.categories["retrieval"] == pytest.approx(70.0)
    assert custom.tasks["niah_single_1"] == pytest.approx(60.0) and custom.score is None
    assert table.avg is None and table.wavg_inc is None and table.wavg_dec is None
    assert any("8K is partial" in note and "cwe" in note for note in table.notes)
    markdown = to_markdown(table)
    assert "| Score (13-task mean) | 90.0 | – | – | – |" in markdown
    assert "| cwe | 90.0 | – | – | – |" in markdown


def test_merge_skips_other_model_args(tmp_path: Path):
    folder = copy_run(LLAMA, tmp_path / "run")
    newest = sorted(folder.glob("results_*.json"))[-1]
    other = folder / "results_2025-02-01T12-00-00.000000.json"
    data = json.loads(newest.read_text())
    data["config"]["model_args"]["kv_cache_dtype"] = "fp8"
    other.write_text(json.dumps(data))
    run = load_run(folder)
    assert other in run.files and newest not in run.files  # the newest file defines the run
    assert any("model_args differ" in w for w in run.warnings)
    data["config"]["model_args"].pop("kv_cache_dtype")
    data["chat_template_sha"] = None  # same arguments, but rendered without the chat template: another run too
    other.write_text(json.dumps(data))
    assert any("chat_template_sha differ" in w for w in load_run(folder).warnings)
    # A single results file can still be reported on its own.
    assert len(load_run(newest).results) == 39


def test_merge_skips_a_file_made_with_other_ruler_settings(tmp_path: Path):
    """A rerun into the same --output_path with other settings never mixes its tasks with the old run's."""
    folder = copy_run(LLAMA, tmp_path / "run")
    newest = sorted(folder.glob("results_*.json"))[-1]
    smoke = folder / "results_2025-02-01T12-00-00.000000.json"
    data = json.loads(newest.read_text())
    for config in data["configs"].values():
        if "ruler" in (config.get("metadata") or {}):
            config["metadata"]["ruler"]["num_samples"] = 2
    smoke.write_text(json.dumps(data))
    run = load_run(folder)
    assert smoke in run.files and newest not in run.files
    assert run.info["settings"]["num_samples"] == 2
    assert any("RULER settings (num_samples 500 vs 2)" in w for w in run.warnings), run.warnings
    assert "Settings: 2 samples/task, profile reference, seed 42, rendering raw+chat" in to_markdown(ruler_table(run))
    # One file whose tasks disagree is a hand-merged file: refused, naming the setting.
    first = next(config for config in data["configs"].values() if "ruler" in (config.get("metadata") or {}))
    first["metadata"]["ruler"]["seed"] = 7
    smoke.write_text(json.dumps(data))
    with pytest.raises(ReportError, match="different settings \\(seed"):
        load_run(folder)


# --------------------------------------------------------------------------- (c) paired bootstrap vs analytic


def _paired_differences(candidate: Path, task: str, length: str) -> np.ndarray:
    def scores(root: Path) -> dict[int, float]:
        [path] = root.rglob(f"samples_ruler_{task}_{length}_*.jsonl")
        return {row["doc_id"]: row["score"] for row in map(json.loads, path.read_text().splitlines())}

    base, cand = scores(BASELINE), scores(candidate)
    return np.array([cand[d] - base[d] for d in sorted(base)])


def test_paired_bootstrap_matches_analytic_se():
    comparison = compare(load_run(BASELINE), load_run(DROP))
    assert comparison.method == "paired-bootstrap" and comparison.n_bootstrap == 2000
    for item, lost in zip(comparison.lengths, (1, 2)):
        # The candidate loses exactly `lost` more of 20 docs in every task, and nothing else changes.
        assert item.score.difference == pytest.approx(-100.0 * lost / 20)
        d = [_paired_differences(DROP, task, item.label.lower()) for task in TASKS]
        analytic = math.sqrt(sum(x.var() / len(x) for x in d)) / len(d)  # paired SE of the 13-task mean
        p = lost / 20
        assert analytic == pytest.approx(math.sqrt(1e4 * p * (1 - p) / 20 / 13))
        assert item.score.difference_se == pytest.approx(analytic, rel=0.10)
        low, high = item.score.difference_ci
        assert low < item.score.difference < high < 0
    overall_analytic = math.sqrt(sum(math.sqrt(1e4 * p * (1 - p) / 20 / 13) ** 2 for p in (0.05, 0.10))) / 2
    assert comparison.overall.difference == pytest.approx(-7.5)
    assert comparison.overall.difference_se == pytest.approx(overall_analytic, rel=0.10)
    assert comparison.overall.recovery == pytest.approx(85.0 / 92.5 * 100)
    # Fixed seed: the same numbers every time; another seed moves them only slightly.
    again = compare(load_run(BASELINE), load_run(DROP))
    assert again.overall.difference_ci == comparison.overall.difference_ci
    other = compare(load_run(BASELINE), load_run(DROP), seed=7)
    assert other.overall.difference_se == pytest.approx(comparison.overall.difference_se, rel=0.10)


def test_stderr_method_without_sample_logs(tmp_path: Path):
    base = copy_run(BASELINE, tmp_path / "base")
    cand = copy_run(DROP, tmp_path / "cand")
    for log in cand.glob("samples_*.jsonl"):
        log.unlink()
    comparison = compare(load_run(base), load_run(cand))
    assert comparison.method == "stderr"
    four = comparison.length("4k")
    baseline, candidate = load_run(base), load_run(cand)
    variances = [baseline.results[(t, 4096)].stderr ** 2 + candidate.results[(t, 4096)].stderr ** 2 for t in TASKS]
    assert four.score.difference_se == pytest.approx(math.sqrt(sum(variances)) / 13)
    # Independent-runs intervals are wider than the paired ones.
    paired = compare(load_run(BASELINE), load_run(DROP)).length("4k")
    assert four.score.difference_se > paired.score.difference_se
    with pytest.raises(ReportError, match="paired bootstrap needs matching sample logs"):
        compare(baseline, candidate, method="paired-bootstrap")


def test_doc_hash_mismatch_refused(tmp_path: Path):
    cand = copy_run(DROP, tmp_path / "cand")
    log = next(cand.glob("samples_ruler_vt_8k_*.jsonl"))
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    rows[3]["doc_hash"] = "0" * 64
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(ReportError, match=r"doc_hash differs for 1 of 20 docs"):
        compare(load_run(BASELINE), load_run(cand))
    allowed = compare(load_run(BASELINE), load_run(cand), allow_mismatch=True)
    assert allowed.method == "stderr" and any("doc_hash" in w for w in allowed.warnings)


def test_recovery_per_task_category_and_lengths_filter():
    comparison = compare(load_run(BASELINE), load_run(NOISE), lengths="4k")
    [four] = comparison.lengths
    assert four.complete and four.label == "4K"
    # Even-indexed tasks lose one doc (95 -> 90), odd ones win one back (95 -> 100).
    assert four.per_task["niah_single_1"].recovery == pytest.approx(90 / 95 * 100)
    assert four.per_task["niah_single_2"].recovery == pytest.approx(100 / 95 * 100)
    assert four.categories["aggregation"].recovery == pytest.approx(100.0)
    assert four.score.difference == pytest.approx(-5 / 13)
    assert select_lengths("4k..64k", [4096, 8192, 131072]) == [4096, 8192]
    assert select_lengths("standard", [2048, 4096, 131072, 262144]) == [4096, 131072]
    with pytest.raises(ReportError, match="has no results at 16K"):
        select_lengths("4k,16k", [4096, 8192])


# --------------------------------------------------------------------------- (d) the gate, API and CLI


def test_gate_pass_threshold_and_significance():
    noise = compare(load_run(BASELINE), load_run(NOISE))
    passed = gate(noise)
    assert passed.passed and not passed.reasons and bool(passed)
    threshold_only = gate(noise, min_recovery=99.9)
    assert not threshold_only.passed
    assert len(threshold_only.reasons) == 1 and "below the required 99.90%" in threshold_only.reasons[0]

    drop = compare(load_run(BASELINE), load_run(DROP))
    significance_only = gate(drop, min_recovery=90.0)  # recovery 91.9% clears 90% ...
    assert not significance_only.passed
    assert len(significance_only.reasons) == 1 and "statistically significant" in significance_only.reasons[0]
    both = gate(drop)
    assert len(both.reasons) == 2
    # Gating on a subset of lengths recomputes the overall from the same replicates.
    four = gate(drop, min_recovery=90.0, lengths="4k")
    assert four.lengths == ("4K",) and four.estimate.recovery == pytest.approx(90 / 95 * 100)


def test_cli_exit_codes(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    assert report_cli(["compare", "--baseline", str(BASELINE), "--candidate", str(NOISE)]) == 0
    out = capsys.readouterr()
    assert "**Gate: PASS**" in out.out and "PASS " in out.err

    assert report_cli(["compare", "--baseline", str(BASELINE), "--candidate", str(DROP)]) == 1
    err = capsys.readouterr().err
    assert "FAIL " in err and "below the required 99.00%" in err and "statistically significant" in err

    # Significance alone fails the gate too.
    assert report_cli(["compare", "--baseline", str(BASELINE), "--candidate", str(DROP), "--min-recovery", "90"]) == 1
    assert "statistically significant" in capsys.readouterr().err

    # One failing candidate among several fails the command; the JSON says which.
    output = tmp_path / "out.json"
    code = report_cli(
        ["compare", "--baseline", str(BASELINE), "--candidate", str(NOISE), "--candidate", str(DROP), "--format", "json", "--output", str(output)]
    )  # fmt: skip
    assert code == 1
    gates = json.loads(output.read_text())["gates"]
    assert [g["passed"] for g in gates] == [True, False]

    assert report_cli(["report", str(LLAMA)]) == 0
    assert "| 88.3 | 85.4 | 91.3 |" in capsys.readouterr().out


def test_mismatched_tokenizer_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    cand = copy_run(DROP, tmp_path / "cand")

    def other_tokenizer(data: dict) -> None:
        for config in data["configs"].values():
            config["metadata"]["ruler"]["tokenizer_fingerprint"] = "sha256:" + "f" * 64

    edit_results(cand, other_tokenizer)
    with pytest.raises(ReportError, match="tokenizer_fingerprint differs in 26 task"):
        compare(load_run(BASELINE), load_run(cand))
    assert report_cli(["compare", "--baseline", str(BASELINE), "--candidate", str(cand)]) == 2
    err = capsys.readouterr().err
    assert "not evaluated on the same data" in err and "--allow-mismatch" in err
    allowed = compare(load_run(BASELINE), load_run(cand), allow_mismatch=True)
    assert any(w.startswith("MISMATCH (allowed): tokenizer_fingerprint") for w in allowed.warnings)
    assert report_cli(["compare", "--baseline", str(BASELINE), "--candidate", str(cand), "--allow-mismatch", "--min-recovery", "90"]) == 1


def test_other_mismatches_refused(tmp_path: Path):
    cand = copy_run(NOISE, tmp_path / "cand")

    def change(data: dict) -> None:
        data["chat_template_sha"] = None  # the candidate ran without --apply_chat_template
        config = data["configs"]["ruler_qa_squad_4k"]["metadata"]["ruler"]
        config["sources"]["squad"]["sha256"] = "0" * 64
        config["sources"]["squad"]["file"] = "/elsewhere/squad.json"

    edit_results(cand, change)
    with pytest.raises(ReportError) as info:
        compare(load_run(BASELINE), load_run(cand))
    message = str(info.value)
    assert "chat_template_sha differs" in message and "sources differs" in message and "ruler_qa_squad_4k" in message


# --------------------------------------------------------------------------- (e) bad input


def test_bad_inputs(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReportError, match="empty folder"):
        load_run(empty)
    with pytest.raises(ReportError, match="does not exist"):
        load_run(tmp_path / "nowhere")
    with pytest.raises(ReportError, match=r"no RULER task results .* found gsm8k"):
        load_run(FIXTURES / "not-ruler")
    corrupt = next((FIXTURES / "corrupt").rglob("results_*.json"))
    with pytest.raises(ReportError, match=rf"{corrupt.name} is not valid JSON"):
        load_run(FIXTURES / "corrupt")
    assert issubclass(ReportError, RulerError)

    for args, expected in (
        (["report", str(empty)], "empty folder"),
        (["report", str(FIXTURES / "not-ruler")], "no RULER task results"),
        (["report", str(FIXTURES / "corrupt")], "not valid JSON"),
        (["compare", "--baseline", str(BASELINE), "--candidate", str(NOISE), "--lengths", "4k,32k"], "has no results at 32K"),
        (["compare", "--baseline", str(BASELINE), "--candidate", str(NOISE), "--lengths", "banana"], "bad length selection"),
    ):
        assert report_cli(args) == 2, args
        assert expected in capsys.readouterr().err


def test_baseline_missing_lengths(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    cand = copy_run(NOISE, tmp_path / "cand")

    def add_16k(data: dict) -> None:
        for section in ("results", "configs", "n-samples"):
            for key in [k for k in data[section] if k.endswith("_8k") and k.count("_") > 1]:
                data[section][key[: -len("8k")] + "16k"] = data[section][key]
        del data["results"]["ruler_cwe_8k"]  # and a task the baseline has but the candidate lacks: fine

    edit_results(cand, add_16k)
    with pytest.raises(ReportError, match=r"baseline .* has no results for what the candidate ran: 16K \(all tasks\)"):
        compare(load_run(BASELINE), load_run(cand))
    assert report_cli(["compare", "--baseline", str(BASELINE), "--candidate", str(cand)]) == 2
    assert "--lengths" in capsys.readouterr().err
    # Excluding 16K makes it comparable; 8K is then compared on the candidate's 12 tasks and flagged.
    comparison = compare(load_run(BASELINE), load_run(cand), lengths="4k..8k")
    assert [item.label for item in comparison.lengths] == ["4K", "8K"]
    assert not comparison.length("8k").complete and "aggregation" not in comparison.length("8k").categories
    assert any("8K: compared on 12 of 13 tasks" in w for w in comparison.warnings)


# --------------------------------------------------------------------------- (f) outputs and plots


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1024, path


def _assert_svg(path: Path) -> None:
    text = path.read_text()
    assert "<svg" in text and len(text) > 1024, path


def test_plots_png_and_svg(tmp_path: Path):
    """Every plot kind once (matplotlib is slow here, so no duplicates): scores, recovery map, depth maps."""
    baseline = load_run(BASELINE)
    written = save_plots(gate(compare(baseline, load_run(DROP))), tmp_path / "plots")
    assert sorted(p.name for p in written) == sorted(
        f"{stem}.{ext}"
        for stem in (
            "ruler_scores",
            "recovery_RedHatAI_Meta-Llama-3.1-8B-Instruct-quantized.w4a16",
            "niah_depth_meta-llama_Llama-3.1-8B-Instruct",
            "niah_depth_RedHatAI_Meta-Llama-3.1-8B-Instruct-quantized.w4a16",
        )
        for ext in ("png", "svg")
    )
    for path in written:
        (_assert_png if path.suffix == ".png" else _assert_svg)(path)
    with pytest.raises(ReportError, match="--log_samples"):
        plot_depth_heatmap(load_run(LLAMA), tmp_path / "none")


def test_depth_bins():
    """Depth 0-100% into 10 bins; the baseline fails its first 1 (4K) or 2 (8K) docs, the shallowest needles."""
    from lm_eval_ruler.report.plots import _depth_matrix

    matrix, counts, lengths = _depth_matrix(load_run(BASELINE))
    assert lengths == [4096, 8192] and counts.sum() == 8 * 20 * 2
    assert counts[:, 0].tolist() == [8 * 2] * 10  # 20 docs spread evenly over 10 bins, 8 NIAH tasks
    assert matrix[0].tolist() == [50.0, 0.0] and np.all(matrix[1:] == 100.0)


def test_missing_matplotlib_is_explained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    table = ruler_table(load_run(LLAMA))
    with pytest.raises(ReportError, match=r"pip install 'lm-eval-ruler\[plot\]'"):
        plot_scores(table, tmp_path / "scores")
    assert "Plots omitted" in to_html(table)


@pytest.fixture(scope="module")
def html_report() -> str:
    """One HTML report shared by the content check and the browser check (plots take seconds to draw)."""
    drop = gate(compare(load_run(BASELINE), load_run(DROP)))
    return to_html([ruler_table(load_run(LLAMA)), drop], title="Release check")


def test_html_is_self_contained(html_report: str):
    page = html_report
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "<table>" in page and "<td>meta-llama/Llama-3.1-8B-Instruct (llama-3.1-8b)</td>" in page
    assert "Gate: FAIL" in page and "88.3" in page
    assert page.count("data:image/png;base64,") == 4  # scores, recovery, and the depth maps of the two logged runs
    assert "src=\"http" not in page and "href=\"http" not in page and "<link" not in page and "<script" not in page


def test_markdown_csv_json_github():
    result = gate(compare(load_run(BASELINE), load_run(NOISE)))
    markdown = to_markdown(result)
    assert "| 4K | 13/13 | 95.0 | 94.6 | -0.38 |" in markdown
    assert "paired bootstrap over documents (B=2000, seed 0)" in markdown
    rows = to_csv([result, ruler_table(load_run(LLAMA))]).splitlines()
    assert rows[0].startswith("section,model,baseline,candidate,length,tokens,scope,name,score")
    assert any(r.startswith("table,meta-llama/Llama-3.1-8B-Instruct,,,,,summary,avg,88.3333") for r in rows)
    assert any(r.startswith("gate,") and r.endswith(",true") for r in rows)
    payload = json.loads(to_json(result))
    assert payload["comparisons"][0]["method"] == "paired-bootstrap"
    assert payload["gates"][0]["passed"] is True
    summary = github_summary(result)
    assert summary.startswith("### ✅ RULER gate passed") and "<details>" in summary


def test_github_format_appends_to_step_summary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert report_cli(["compare", "--baseline", str(BASELINE), "--candidate", str(DROP), "--format", "github"]) == 1
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "❌ RULER gate failed" in text


def test_cli_html_and_plots(tmp_path: Path):
    output, plots = tmp_path / "r.html", tmp_path / "plots"
    args = ["report", f"llama={LLAMA}", str(PARTIAL), "--format", "html", "--output", str(output), "--plots", str(plots)]
    assert report_cli(args) == 0
    page = output.read_text()
    assert "<td>llama</td>" in page and "<td>Qwen/Qwen2.5-7B-Instruct</td>" in page and "data:image/png;base64," in page
    assert sorted(p.name for p in plots.iterdir()) == ["ruler_scores.png", "ruler_scores.svg"]


# --------------------------------------------------------------------------- headless browser check

CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)")
def test_html_renders_in_headless_chromium(tmp_path: Path, html_report: str):
    """Render the HTML report in a real browser: it must load offline and produce a non-empty screenshot.

    By hand: chromium --headless --no-sandbox --disable-gpu --screenshot=shot.png --window-size=1280,2000 file://$PWD/report.html
    """
    page = tmp_path / "report.html"
    page.write_text(html_report)
    screenshot = tmp_path / "screenshot.png"
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={screenshot}", "--window-size=1280,2000", page.resolve().as_uri(),
    ]  # fmt: skip
    subprocess.run(command, capture_output=True, timeout=120, check=False)
    assert screenshot.is_file(), "chromium wrote no screenshot"
    _assert_png(screenshot)
    assert screenshot.stat().st_size > 20_000  # a blank page is a few KB; tables and plots are far more


def test_results_written_by_a_real_lm_eval_run_of_this_plugin():
    """tests/fixtures/results/real-dummy-run: `lm_eval --model dummy` on three noise/needle tasks at 4k, with sample logs."""
    from lm_eval_ruler.report import load_run, ruler_table

    run = load_run(Path(__file__).resolve().parent / "fixtures" / "results" / "real-dummy-run")
    assert sorted(run.results) == [("niah_multikey_2", 4096), ("niah_multikey_3", 4096), ("niah_single_1", 4096)]
    table = ruler_table(run)
    text = to_markdown([table])
    assert "| niah_single_1 | 0.0 |" in text and "| niah_single_2 | – |" in text
    assert "4K is partial: 10 of 13 tasks missing" in text
