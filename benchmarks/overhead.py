"""Pipeline overhead: `dvc repro` from a clean state and as a no-op, and `pipeline --help`.

Measured in a temporary copy of the repository: the files `git ls-files` names (as they are in
the working tree), `git init` and one commit; PATH has the venv's bin first and
MLFLOW_TRACKING_URI is unset, so the copy uses its own default store, `<copy>/mlflow.db`.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.workloads import REPO

BIN = Path(sys.executable).parent
UNSET = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_RUN_ID",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "DVC_EXP_NAME",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
)
GIT_USER = ("-c", "user.name=benchmarks", "-c", "user.email=benchmarks@example.invalid")


THREADS: dict[str, str] = {}  # OMP_NUM_THREADS and MKL_NUM_THREADS when the suite has --threads


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(THREADS)
    return env


def repo_copy(destination: Path) -> Path:
    """The tracked files of this repository (working-tree versions) in a fresh git repository."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    destination.mkdir(parents=True)
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # a tracked file someone has just deleted is skipped
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    env = environment()
    for args in (["init", "-q"], ["add", "-A"], [*GIT_USER, "commit", "-q", "-m", "benchmark copy"]):
        subprocess.run(["git", *args], cwd=destination, env=env, check=True, capture_output=True)
    return destination


def timed(args: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=900)
    return time.perf_counter() - started, proc


def _failure(what: str, proc: subprocess.CompletedProcess[str]) -> str:
    lines = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
    return f"{what} exited {proc.returncode}: {lines[-1][:300]}"


def measure(scratch: Path, quick: bool, log: Any = print) -> dict[str, dict[str, Any]]:
    """Seconds for: clean `dvc repro` (1 copy in quick mode, 2 otherwise, median), no-op
    `dvc repro` (median of 3), `pipeline --help` (median of 3 in quick mode, else 5)."""
    results: dict[str, dict[str, Any]] = {}
    clean, noop, copy = [], [], None
    for i in range(1 if quick else 2):
        copy = repo_copy(scratch / f"repo-copy-{i}")
        seconds, proc = timed([str(BIN / "dvc"), "repro"], copy)
        if proc.returncode != 0:
            results["dvc_repro_clean"] = {"error": _failure("dvc repro", proc)}
            break
        clean.append(seconds)
        log(f"  dvc repro (clean copy {i + 1}): {seconds:.2f} s")
    if clean:
        results["dvc_repro_clean"] = {"seconds": statistics.median(clean), "runs": clean}
        for _ in range(3):
            seconds, proc = timed([str(BIN / "dvc"), "repro"], copy)
            if proc.returncode != 0:
                results["dvc_repro_noop"] = {"error": _failure("dvc repro (no-op)", proc)}
                break
            noop.append(seconds)
            if "up to date" not in proc.stdout + proc.stderr:
                results["dvc_repro_noop"] = {"note": "a stage re-ran: the pipeline is not a no-op"}
        if noop:
            results["dvc_repro_noop"] = {
                **results.get("dvc_repro_noop", {}),
                "seconds": statistics.median(noop),
                "runs": noop,
            }
        log(f"  dvc repro (no-op): {', '.join(f'{s:.2f}' for s in noop)} s")
    helps = []
    for _ in range(3 if quick else 5):
        seconds, proc = timed([str(BIN / "pipeline"), "--help"], scratch)
        if proc.returncode != 0:
            results["pipeline_help"] = {"error": _failure("pipeline --help", proc)}
            break
        helps.append(seconds)
    if helps:
        results["pipeline_help"] = {"seconds": statistics.median(helps), "runs": helps}
        log(f"  pipeline --help: {', '.join(f'{s:.2f}' for s in helps)} s")
    return results
