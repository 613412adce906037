"""``lm-eval-ruler sweep --slurm``: the job scripts, and a real single-node Slurm running them.

The fast tests check the scripts (``--dry-run`` prints them): the ``#SBATCH`` lines, the array
of pending cells only, GPUs from the parallel sizes, and the refusals. The cluster tests start
their own munged, slurmctld and slurmd (Debian's ``slurm-wlm`` and ``munge``, as root) from a
``slurm.conf`` in a temporary folder, submit a 2-cell dummy-backend sweep, and check that every
cell runs once, that the report job writes its report, and that after one array task is
cancelled mid-cell, resubmitting the command reruns that cell only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lm_eval_ruler import sweep
from lm_eval_ruler.errors import ConfigurationError
from lm_eval_ruler.report.sweep_folder import CELL_FILE, LOG_FILE, load_sweep, read_state
from lm_eval_ruler.sweep import SweepConfig, cell_settings, model_slug
from lm_eval_ruler.sweep.config import resolve
from lm_eval_ruler.sweep.slurm import forwarded_arguments, parse_slurm_options

MODEL = "fake/model"
TASK = "niah_single_1"
MISSING = "install slurm-wlm and munge (Debian) — .ci/run does"
SLURM_PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
#: Long enough for two dummy cells and the report on a busy 2-core machine; a hang fails with the logs.
WAIT_SECONDS = 300


def sweep_argv(output: Path, cache: Path, *extra: str, tokenizer: str = "tok", lengths: str = "1k,2k") -> list[str]:
    return [
        "--model", MODEL, "--model-arg", f"tokenizer={tokenizer}", "--lengths", lengths, "--tasks", TASK,
        "--backend", "dummy", "--num-samples", "2", "--no-apply-chat-template", "--output", str(output),
        "--cache-dir", str(cache), "--no-progress", *extra,
    ]  # fmt: skip


def dry_run_scripts(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    capsys.readouterr()
    assert sweep.main([*argv, "--slurm", "--dry-run"]) == 0
    return capsys.readouterr().out


def sbatch_lines(text: str) -> list[str]:
    array = text.split("report.sh (not written: dry run)", 1)[0]  # the array script, before the report script
    return [line for line in array.splitlines() if line.startswith("#SBATCH")]


# --------------------------------------------------------------------------------------------
# scripts (no Slurm needed)


def test_dry_run_prints_the_array_and_report_scripts(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    output = tmp_path / "out"
    argv = sweep_argv(output, tmp_path / "cache", "--max-window", "8k", "--slurm-option", "partition=gpu",
                      "--slurm-option", "time=04:00:00", "--slurm-option", "exclusive", "--slurm-option", "job-name=mine")  # fmt: skip
    text = dry_run_scripts(capsys, argv)
    assert sbatch_lines(text) == [
        "#SBATCH --job-name=mine",
        "#SBATCH --array=0,1",
        f"#SBATCH --output={output}/slurm/logs/%A_%a.out",
        f"#SBATCH --chdir={os.getcwd()}",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=04:00:00",
        "#SBATCH --exclusive",
    ]  # the dummy backend asks for no GPU
    command = next(line for line in text.splitlines() if line.startswith("exec ") and " sweep " in line)
    assert command.startswith(f"exec {sys.executable} -m lm_eval_ruler sweep --model={MODEL} ")
    assert command.endswith(f'--output {output} --cache-dir {tmp_path / "cache"} --no-report --no-progress '
                            '--shard "${SLURM_ARRAY_TASK_ID}/2"')  # fmt: skip
    assert "--slurm" not in command and "--dry-run" not in command and "--max-window=8k" in command
    report = text.split("report.sh (not written: dry run)\n", 1)[1]
    assert "#SBATCH --job-name=mine-report" in report and "#SBATCH --partition=gpu" in report and "--array" not in report
    assert f"-m lm_eval_ruler report {output} --output {output}/slurm/report.md" in report
    assert "sbatch --dependency=afterany:" in text
    assert not output.exists()


def test_the_array_holds_only_the_cells_not_done(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    output = tmp_path / "out"
    argv = sweep_argv(output, tmp_path / "cache", "--max-window", "8k", lengths="1k,2k,4k")
    config = SweepConfig(models=(MODEL,), lengths=("1k", "2k", "4k"), tasks=(TASK,), backend="dummy", num_samples=2,
                         apply_chat_template=False, model_args={"tokenizer": "tok"}, output=output)  # fmt: skip
    settings = cell_settings(resolve(config), resolve(config).models[0]).to_dict()
    for length in ("1k", "4k"):  # finished cells, made with these settings
        folder = output / model_slug(MODEL) / length
        folder.mkdir(parents=True)
        (folder / "results.json").write_text("{}")
        (folder / CELL_FILE).write_text(json.dumps({"status": "done", "results_file": "results.json", "settings": settings}))
    assert "#SBATCH --array=1" in sbatch_lines(dry_run_scripts(capsys, argv))
    (output / model_slug(MODEL) / "2k").mkdir()
    (output / model_slug(MODEL) / "2k" / CELL_FILE).write_text(
        json.dumps({"status": "done", "results_file": "results.json", "settings": settings})
    )
    (output / model_slug(MODEL) / "2k" / "results.json").write_text("{}")
    assert sweep.main([*argv, "--slurm"]) == 0
    assert "nothing to do: 3 of 3 cells done" in capsys.readouterr().out
    assert not (output / "slurm").exists()


@pytest.mark.parametrize(
    ("extra", "gres"),
    [
        (["--backend", "vllm", "--tensor-parallel-size", "2"], "#SBATCH --gres=gpu:2"),
        (["--backend", "vllm", "--tensor-parallel-size", "2", "--data-parallel-size", "2"], "#SBATCH --gres=gpu:4"),
        (["--backend", "vllm", "--slurm-option", "gpus-per-task=8"], "#SBATCH --gpus-per-task=8"),  # replaces gres
        (["--backend", "hf"], "#SBATCH --gres=gpu:1"),
        (["--backend", "hf", "--device", "cpu"], None),
        (["--backend", "dummy"], None),
    ],
)
def test_gpus_follow_the_backend_and_parallel_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
                                                    gres: str | None):  # fmt: skip
    argv = [arg for arg in sweep_argv(tmp_path / "out", tmp_path / "cache", "--max-window", "8k") if arg != "--backend"]
    argv.remove("dummy")
    lines = sbatch_lines(dry_run_scripts(capsys, [*argv, *extra]))
    gpu_lines = [line for line in lines if line.startswith(("#SBATCH --gres", "#SBATCH --gpus"))]
    assert gpu_lines == ([gres] if gres else [])


def test_a_labelled_model_with_a_larger_tensor_parallel_size_sets_the_gpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    argv = ["--model", "a=org/a", "--model", "b=org/b", "--model-option", "b:tensor_parallel_size=4", "--lengths", "1k",
            "--tasks", TASK, "--max-window", "8k", "--output", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")]  # fmt: skip
    assert "#SBATCH --gres=gpu:4" in sbatch_lines(dry_run_scripts(capsys, argv))


def test_forwarded_arguments_reproduce_the_command_line():
    parser = sweep.add_arguments(argparse.ArgumentParser())
    argv = ["--model", "a=org/a", "--model", "org/b", "--lengths", "4k,8k", "--model-arg", "dtype=bfloat16",
            "--model-arg", "tokenizer=t", "--no-apply-chat-template", "--enable-prefix-caching", "--tensor-parallel-size", "2",
            "--gpu-memory-utilization", "0.8", "--lm-eval-args=--trust_remote_code", "--offline", "--no-log-samples",
            "--slurm", "--submit", "--slurm-option", "partition=gpu", "--replace", "--output", "x", "--no-report"]  # fmt: skip
    args = parser.parse_args(argv)
    forwarded = forwarded_arguments(args.sweep_parser, args)
    assert not [
        arg for arg in forwarded if arg.split("=")[0] in {"--slurm", "--submit", "--slurm-option", "--replace", "--output"}
    ]
    assert "--no-report" not in forwarded and "--lm-eval-args=--trust_remote_code" in forwarded
    again = parser.parse_args(forwarded)
    dropped = {"slurm", "slurm_options", "submit", "replace", "output", "report"}
    assert {k: v for k, v in vars(again).items() if k not in dropped} == {k: v for k, v in vars(args).items() if k not in dropped}


def test_slurm_refusals_name_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    argv = sweep_argv(tmp_path / "out", tmp_path / "cache", "--max-window", "8k")
    for extra, fragment in [
        (["--submit"], "--submit need --slurm: add --slurm"),
        (["--slurm-option", "partition=gpu"], "--slurm-option need --slurm"),
        (["--slurm", "--shard", "0/2"], "drop --shard"),
        (["--slurm", "--slurm-option", "part ition=gpu"], "--slurm-option partition=gpu"),
        (["--slurm", "--slurm-option", "array=0-3"], "set by the sweep"),
    ]:
        capsys.readouterr()
        assert sweep.main([*argv, *extra]) == 2, extra
        assert fragment in capsys.readouterr().err, extra
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch: refused before any data or script
    assert sweep.main([*argv, "--slurm", "--submit"]) == 2
    assert "sbatch not found on PATH" in capsys.readouterr().err and not (tmp_path / "out").exists()
    with pytest.raises(ConfigurationError, match="letters, digits, dashes"):
        parse_slurm_options(["p=gpu"])  # a short option: write the long one
    with pytest.raises(ConfigurationError, match="one line"):
        parse_slurm_options(["comment=a\nb"])
    assert parse_slurm_options(["--partition=gpu", "exclusive"]) == (("partition", "gpu"), ("exclusive", None))


# --------------------------------------------------------------------------------------------
# a real single-node Slurm


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _slurm_pids() -> set[int]:
    """Slurm and munge processes on this machine (daemons, job steps), by their command name."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if name.startswith(("slurm", "munged")):
                found.add(int(entry.name))
    return found


SLURM_CONF = """\
ClusterName=rulertest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=5
MailProg=/bin/true
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class Cluster:
    """munged, slurmctld and slurmd of one ``slurm.conf``, started in the foreground so they can be stopped."""

    def __init__(self) -> None:
        # munged requires every directory above its socket to be searchable by all: not pytest's 0700 tmp.
        self.root = Path(tempfile.mkdtemp(prefix="ruler-slurm-"))
        self.root.chmod(0o755)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.before = _slurm_pids()

    def log(self, name: str, lines: int = 30) -> str:
        path = self.root / name
        text = path.read_text(errors="replace") if path.is_file() else "(none)"
        return f"--- {name}:\n" + "\n".join(text.splitlines()[-lines:])

    def start(self) -> None:
        munge = self.root / "munge"
        munge.mkdir(mode=0o755)
        (munge / "munge.key").write_bytes(os.urandom(1024))
        (munge / "munge.key").chmod(0o400)
        for name in ("state", "spool"):
            (self.root / name).mkdir()
        host = socket.gethostname().split(".")[0]
        conf = self.root / "slurm.conf"
        conf.write_text(SLURM_CONF.format(host=host, root=self.root, ctld_port=_free_port(), d_port=_free_port(),
                                          cpus=os.cpu_count() or 1))  # fmt: skip
        os.environ["SLURM_CONF"] = str(conf)
        self._spawn(["munged", "-F", f"--socket={munge / 'munge.socket'}", f"--key-file={munge / 'munge.key'}",
                     f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
                     f"--seed-file={munge / 'munged.seed'}"], "munged.out")  # fmt: skip
        self._wait(lambda: (munge / "munge.socket").exists(), "munged never created its socket", "munge/munged.log")
        self._spawn(["slurmctld", "-D", "-i", "-f", str(conf)], "slurmctld.out")
        self._spawn(["slurmd", "-D", "-f", str(conf), "-N", host], "slurmd.out")
        self._wait(lambda: self.run("sinfo", "-h", "-o", "%t").strip() == "idle", "the node never became idle",
                   "slurmctld.log", "slurmd.log")  # fmt: skip

    def _spawn(self, command: list[str], log: str) -> None:
        path = shutil.which(command[0]) or f"/usr/sbin/{command[0]}"
        with open(self.root / log, "wb") as out:
            self.processes.append(subprocess.Popen([path, *command[1:]], stdout=out, stderr=subprocess.STDOUT))

    def _wait(self, ready: Any, message: str, *logs: str, seconds: float = 60) -> None:
        deadline = time.time() + seconds
        while not ready():
            dead = [p.args for p in self.processes if p.poll() is not None]
            if dead or time.time() > deadline:
                details = "\n".join(self.log(name) for name in (*logs, "munged.out", "slurmctld.out", "slurmd.out"))
                raise RuntimeError(f"{message} (exited: {dead})\n{details}")
            time.sleep(0.3)

    def run(self, *command: str) -> str:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        return done.stdout if done.returncode == 0 else ""

    def jobs(self) -> list[str]:
        """Queued or running jobs (and array tasks): ``JOBID STATE``."""
        return [line.strip() for line in self.run("squeue", "-h", "-r", "-o", "%i %t").splitlines() if line.strip()]

    def stop(self) -> None:
        subprocess.run(["scancel", "--user=root"], capture_output=True, check=False, timeout=60)
        deadline = time.time() + 60
        while self.jobs() and time.time() < deadline:
            time.sleep(0.5)
        for process in reversed(self.processes):  # slurmd, slurmctld, then munged
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        os.environ.pop("SLURM_CONF", None)
        deadline = time.time() + 30
        while (left := _slurm_pids() - self.before) and time.time() < deadline:
            time.sleep(0.5)
        shutil.rmtree(self.root, ignore_errors=True)
        assert not left, f"Slurm processes outlived the test cluster: {sorted(left)}"


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Cluster]:
    """A private single-node Slurm (SLURM_CONF points at it while it runs); every process stopped at the end."""
    missing = [name for name in SLURM_PROGRAMS if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]
    if missing:
        pytest.skip(f"{MISSING} (missing: {', '.join(missing)})")
    if os.geteuid() != 0:
        pytest.skip("the test cluster runs slurmd as root (SlurmdUser=root): run the tests as root, as CI does")
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One plugin cache for the cluster tests: the data are generated once, by the first submission."""
    return tmp_path_factory.mktemp("slurm-cache")


def wait_for_jobs(cluster: Cluster, output: Path, until: Any = None) -> None:
    """Wait until the queue is empty (or ``until()``, while jobs remain); else fail with the queue and every log."""
    deadline = time.time() + WAIT_SECONDS
    while time.time() < deadline:
        queue = cluster.jobs()
        if (until() if until is not None else not queue) or not queue:
            break
        time.sleep(0.1 if until is not None else 0.5)
    if until is not None and not until() or until is None and cluster.jobs():
        logs = "\n".join(f"--- {p}:\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(output.rglob("*.out")))
        cells = "\n".join(f"--- {p}:\n{p.read_text(errors='replace')[-2000:]}" for p in sorted(output.rglob(LOG_FILE)))
        pytest.fail(f"Slurm jobs not finished after {WAIT_SECONDS} s; queue: {cluster.jobs()}\n{logs}\n{cells}\n"
                    f"{cluster.log('slurmctld.log')}\n{cluster.log('slurmd.log')}")  # fmt: skip


def submissions(output: Path) -> list[dict[str, Any]]:
    return json.loads((output / "slurm" / "jobs.json").read_text())["submissions"]


def states(output: Path) -> dict[str, dict[str, Any]]:
    return {length: read_state(output / model_slug(MODEL) / length / CELL_FILE) or {} for length in ("1k", "2k")}


def test_a_submitted_sweep_runs_every_cell_once_and_reports(slurm_cluster: Cluster, data_cache: Path, llama3_tokenizer: str,
                                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]):  # fmt: skip
    output = tmp_path / "out"
    argv = sweep_argv(output, data_cache, tokenizer=llama3_tokenizer)
    started = time.perf_counter()
    assert sweep.main([*argv, "--slurm", "--submit"]) == 0
    assert "submitted array job" in capsys.readouterr().out
    [submission] = submissions(output)
    assert submission["cells"] == {"0": f"{model_slug(MODEL)}/1k", "1": f"{model_slug(MODEL)}/2k"}
    wait_for_jobs(slurm_cluster, output)
    print(f"\nSlurm array of 2 dummy cells and the report job: {time.perf_counter() - started:.0f} s")

    for index, (length, state) in enumerate(states(output).items()):
        assert state["status"] == "done" and state["attempt"] == 1 and state["shard"] == f"{index}/2", state
        log = output / "slurm" / "logs" / f"{submission['array_job']}_{index}.out"
        assert log.is_file()
    report = output / "slurm" / "report.md"
    assert report.is_file() and MODEL in report.read_text(), list((output / "slurm" / "logs").iterdir())
    [(name, run)] = load_sweep(output).items()
    assert name == MODEL and set(run.results) == {(TASK, 1024), (TASK, 2048)}

    # Everything done: the same command submits nothing.
    assert sweep.main([*argv, "--slurm", "--submit"]) == 0
    assert "nothing to do: 2 of 2 cells done" in capsys.readouterr().out
    assert len(submissions(output)) == 1 and not slurm_cluster.jobs()


def test_resubmitting_reruns_only_the_cancelled_cell(slurm_cluster: Cluster, data_cache: Path, llama3_tokenizer: str,
                                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]):  # fmt: skip
    output = tmp_path / "out"
    argv = sweep_argv(output, data_cache, tokenizer=llama3_tokenizer)
    started = time.perf_counter()
    assert sweep.main([*argv, "--slurm", "--submit"]) == 0
    [first] = submissions(output)
    # Freeze the 2k cell's lm-eval process as soon as it starts (importing lm-eval alone takes seconds), so it is
    # deterministically mid-run, then cancel its array task: Slurm sends SIGCONT and SIGTERM to the task's processes.
    wait_for_jobs(slurm_cluster, output, until=lambda: bool(states(output)["2k"].get("pid")))
    os.kill(states(output)["2k"]["pid"], signal.SIGSTOP)
    slurm_cluster.run("scancel", f"{first['array_job']}_1")
    wait_for_jobs(slurm_cluster, output)
    killed = states(output)
    assert killed["1k"]["status"] == "done" and killed["2k"]["status"] != "done" and killed["2k"]["attempt"] == 1, killed
    finished = (output / model_slug(MODEL) / "1k" / CELL_FILE).read_bytes()

    capsys.readouterr()
    assert sweep.main([*argv, "--slurm", "--submit"]) == 0
    second = submissions(output)[-1]
    assert second["cells"] == {"1": f"{model_slug(MODEL)}/2k"} and second["array_job"] != first["array_job"]
    assert "#SBATCH --array=1\n" in (output / "slurm" / "sweep.sh").read_text()
    wait_for_jobs(slurm_cluster, output)
    print(f"\nSlurm array, a cancelled cell and its resubmission: {time.perf_counter() - started:.0f} s")

    rerun = states(output)
    assert rerun["2k"]["status"] == "done" and rerun["2k"]["attempt"] == 2, rerun
    assert (output / model_slug(MODEL) / "1k" / CELL_FILE).read_bytes() == finished  # not launched again
    logs = {path.name for path in (output / "slurm" / "logs").glob(f"{second['array_job']}_*.out")}
    assert logs == {f"{second['array_job']}_1.out"}
    assert set(next(iter(load_sweep(output).values())).results) == {(TASK, 1024), (TASK, 2048)}
