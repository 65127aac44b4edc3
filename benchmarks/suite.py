"""`python -m benchmarks [--quick] [--json PATH]`: every workload, baseline against ours, then the
pipeline's own overhead and scaling, then one table of targets with PASS / MISS.

Each side of a workload runs in a process of its own (`benchmarks.worker`, forked from a "zygote"
that did the imports every process of its kind does), set up before the clock starts (data, the
dataset/split stages, params); the parent then asks the sides for runs in turn, A B A B ..., after
one untimed warm-up each, and each side times its run inside itself.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import overhead
from benchmarks import workloads as W
from benchmarks.command_line import Parser, positive, rows_path, write_rows

SIDE_LABEL = {
    "baseline": "baseline",
    "ours": "ours",
    "ours_untracked": "ours, tracking off",
    "ours_fused": "ours, train.fused",
}
# a side that runs in another side's process: tracking off in the tracked side's own process,
# alternated with its tracked runs, so the tracking row compares one process with itself
HOSTED = {"ours_untracked": "ours"}
SCALING_RANGE = (7.5, 12.5)  # 10x the data: 10x the time, within 25 %
MODEL_LOGGING_PARTS = ("log_model", "log_checkpoint_model", "register_model")
FIT_TRACKING_PARTS = ("log_checkpoint", "log_metrics")  # tracking's calls from inside the fit
GPU_LOSS_TOLERANCE = 1e-4  # relative, for the final losses on a GPU
GPU_FIT_SECONDS = {"s0_wide": 0.30, "s4": 1.5}  # ours's training on an H100, full size (issue 5)
TARGETS = {  # name: (limit, unit)
    "dvc_repro_clean": (15.0, "s"),
    "dvc_repro_noop": (1.5, "s"),
    "pipeline_help": (0.5, "s"),
    "model_logging": (1.5, "s"),
}


class WorkerError(RuntimeError):
    pass


class Worker:
    """A `benchmarks.worker` process of its own: one side of one workload."""

    def __init__(self, spec: dict[str, Any], env: dict[str, str], log: Path) -> None:
        self.spec, self.log = spec, log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", json.dumps(spec)],
            cwd=W.REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
        )
        self.commands, self.answers = self.proc.stdin, self.proc.stdout

    def read(self) -> dict[str, Any]:
        assert self.answers is not None
        line = self.answers.readline()
        if not line:
            tail = self.log.read_text()[-3000:] if self.log.is_file() else ""
            raise WorkerError(f"{self.spec['side']} worker died:\n{tail}")
        answer = json.loads(line)
        if "error" in answer:
            raise WorkerError(f"{self.spec['side']} worker: {answer['error']}")
        return answer

    def send(self, command: str) -> None:
        assert self.commands is not None
        try:
            self.commands.write(command + "\n")
            self.commands.flush()
        except BrokenPipeError:
            self.read()  # raises with the log's tail
            raise

    def call(self, command: str) -> dict[str, Any]:
        self.send(command)
        return self.read()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.commands is not None and not self.commands.closed:
                self.commands.write("exit\n")
                self.commands.close()
        self.wait()

    def wait(self) -> None:
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Zygote:
    """`benchmarks.worker --zygote KIND`: imports what every side of KIND needs once, then forks a
    side per request, which talks to us through two FIFOs. Saves a few seconds of imports per side
    on a 2-core machine; each side is still a process of its own (its own peak RSS)."""

    def __init__(self, kind: str, env: dict[str, str], scratch: Path) -> None:
        self.kind, self.scratch = kind, scratch
        self.log = scratch / f"zygote-{kind}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", "--zygote", kind],
            cwd=W.REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log.open("w"),
            text=True,
        )
        self.ready: dict[str, Any] | None = None
        self.count = 0

    def wait_ready(self) -> dict[str, Any]:
        if self.ready is None:
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()
            if not line:
                raise WorkerError(f"{self.kind} zygote died:\n{self.log.read_text()[-3000:]}")
            self.ready = json.loads(line)
        return self.ready

    def fork(self, spec: dict[str, Any], env: dict[str, str], log: Path) -> Forked:
        self.wait_ready()
        self.count += 1
        fifos = self.scratch / "fifos"
        fifos.mkdir(exist_ok=True)
        commands, answers = fifos / f"{self.kind}-{self.count}.in", fifos / f"{self.kind}-{self.count}.out"
        os.mkfifo(commands)
        os.mkfifo(answers)
        request = {"spec": spec, "env": env, "log": str(log)}
        request.update(commands=str(commands), answers=str(answers))
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return Forked(spec, log, commands, answers)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Forked(Worker):
    """A side forked by a Zygote: the same conversation, over FIFOs."""

    def __init__(self, spec: dict[str, Any], log: Path, commands: Path, answers: Path) -> None:
        self.spec, self.log = spec, log
        # the side opens `commands` for reading, then `answers` for writing: the same order here
        self.commands = open(commands, "w")  # noqa: SIM115 (closed in close())
        self.answers = open(answers)  # noqa: SIM115

    def wait(self) -> None:
        with contextlib.suppress(OSError):
            self.answers.read()  # EOF: the side has exited
            self.answers.close()


def worker_env(scratch: Path, threads: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in overhead.UNSET}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(W.REPO), env.get("PYTHONPATH", "")]))
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch / 'mlflow.db'}"
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    if threads:
        overhead.THREADS.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        env.update(overhead.THREADS)
    return env


def mb(kb: int | None) -> str:
    return "?" if kb is None else f"{kb / 1024:.0f} MB"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# -- one group of sides, alternated ----------------------------------------------------------------
def prepare_inputs(
    workload: W.Workload, side: str, scratch: Path, folder: Path, device: str = "cpu"
) -> dict[str, Any]:
    """A side's inputs, written before its warm-up (untimed): for a baseline the tutorial's data
    (its generation, with scikit-learn, as the tutorial does it) in a file; for ours a Layout holding
    `pipeline.stages.data` and `split` outputs, and the composed params of the run and the warm-up."""
    if side == "baseline":
        if workload.name == "s4":
            return {"root": str(W.mnist_root())}
        family = "blobs64" if workload.name == "s1" else "blobs4"
        path = scratch / "data" / f"{family}.npz"
        if not path.is_file():
            import numpy as np

            x, y = W.blobs64() if family == "blobs64" else W.blobs4_split()
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, x=x, y=y)
        return {"data": str(path)}
    from pipeline import stages
    from pipeline.config import params_from_dict

    tracked = side != "ours_untracked"
    raw = W.ours_params(workload, tracking=tracked, device=device)
    if side == "ours_fused":  # S1's group, for the s1_fused row
        raw["train"]["fused"] = True
    warmup = W.warmup_params(raw)
    layout = stages.Layout(folder / side)
    params = params_from_dict(raw)
    stages.data(params, layout)
    stages.split(params, layout)
    return {"layout": str(layout.root), "params": raw, "warmup_params": warmup}


class Group:
    """The sides of one workload: forked, given their inputs and warmed up (untimed), then `reps`
    rounds of one run per side, in turn. Each group tracks into an MLflow store of its own in a
    folder of its own (new, so a copy of an empty one: pipeline.store_template)."""

    def __init__(
        self, workload: W.Workload, sides: list[str], args: argparse.Namespace, scratch: Path
    ) -> None:
        self.workload, self.sides, self.quick = workload, sides, args.quick
        self.reps: int = args.reps or workload.rounds
        self.device: str = args.device
        self.folder = scratch / workload.name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.store = self.folder / "mlflow.db"
        self.workers: dict[str, Worker] = {}
        self.ready: dict[str, dict[str, Any]] = {}
        self.inputs: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        self.host = {side: HOSTED[side] for side in sides if HOSTED.get(side) in sides}
        self.error: str | None = None

    def spawn(self, zygotes: dict[str, Zygote]) -> None:
        """One process per side, forked from the zygote of its kind."""

        def step() -> None:
            env = {"MLFLOW_TRACKING_URI": f"sqlite:///{self.store}"}
            for side in (s for s in self.sides if s not in self.host):
                spec = {"workload": self.workload.name, "side": side, "quick": self.quick}
                spec.update(cwd=str(self.folder), device=self.device)
                zygote = zygotes["baseline" if side == "baseline" else "ours"]
                self.workers[side] = zygote.fork(spec, env, self.folder / f"{side}.log")

        self.guard(step)

    def guard(self, step: Any) -> None:
        """Run one set-up step; a failing side fails the whole group (its rows say why)."""
        if self.error:
            return
        try:
            step()
        except (WorkerError, OSError, ValueError, RuntimeError) as exc:
            self.error = str(exc)
            self.close()

    def prepare(self, scratch: Path) -> None:
        """Data files, Layouts and params for every side, in this process (untimed)."""

        def step() -> None:
            for side in self.sides:
                self.inputs[side] = prepare_inputs(self.workload, side, scratch, self.folder, self.device)
            for side, host in self.host.items():  # the host runs it with these inputs too
                self.inputs[host] = {**self.inputs[host], "hosted": {side: self.inputs.pop(side)}}

        self.guard(step)

    def start_warmup(self, zygotes: dict[str, Zygote]) -> None:
        """Wait for every side's set-up, hand it its inputs and ask for its untimed warm-up run
        (the groups' warm-ups overlap: 5 steps each, and a store of their own)."""

        def step() -> None:
            for side, worker in self.workers.items():
                self.ready[side] = worker.read()
                kind = "baseline" if side == "baseline" else "ours"
                self.ready[side]["zygote_import_s"] = (zygotes[kind].ready or {}).get("import_s")
                worker.call(json.dumps({"inputs": self.inputs[side]}))
                worker.send("warmup")
            for side, host in self.host.items():
                self.ready[side] = {**self.ready[host], "hosted_by": host}

        self.guard(step)

    def finish_warmup(self) -> None:
        def step() -> None:
            for side, worker in self.workers.items():
                self.ready[side]["warmup_s"] = round(worker.read()["seconds"], 3)
            for side, host in self.host.items():
                self.ready[side]["warmup_s"] = self.ready[host]["warmup_s"]

        self.guard(step)

    def measure(self) -> dict[str, Any]:
        load = [os.getloadavg()[0]]
        try:
            for round_ in range(self.reps):
                results = {side: self.run(side) for side in self.order(round_)}
                line = []
                for side in self.sides:
                    self.runs[side].append(results[side])
                    line.append(f"{SIDE_LABEL[side]} {results[side]['seconds']:.3f} s")
                print(f"    round {round_ + 1}: " + ", ".join(line), flush=True)
        finally:
            self.close()
        load.append(os.getloadavg()[0])
        return {
            "runs": self.runs,
            "ready": self.ready,
            "loadavg": load,
            "device": self.device,
            "quick": self.quick,
        }

    def order(self, round_: int) -> list[str]:
        """The sides' order in a round: as listed in even rounds, reversed in odd ones (A B, B A,
        ...), so that in every pair of sides each runs first as often, and a machine that speeds
        up or slows down over a few rounds favours neither."""
        sides = list(self.sides)
        return sides if round_ % 2 == 0 else sides[::-1]

    def run(self, side: str) -> dict[str, Any]:
        """One timed run of `side`, in its own process or in its host's (HOSTED)."""
        host = self.host.get(side)
        return self.workers[host or side].call(f"run {side}" if host else "run")

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()


NOISE = 1.5  # a side whose slowest round is this much slower than its fastest was disturbed
ERROR_MARGIN = 2.0  # a ratio's miss within this many standard errors of its median is noise


def median_error(values: list[float]) -> float:
    """The standard error of the median of `values`, from their spread (about 1.25 sigma / sqrt n
    for normal noise); 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    return 1.2533 * statistics.stdev(values) / len(values) ** 0.5


def noisy(runs: list[dict[str, Any]]) -> bool:
    seconds = [r["seconds"] for r in runs]
    return bool(seconds) and max(seconds) > NOISE * min(seconds)


def _final(runs: list[dict[str, Any]], key: str = "final_loss") -> Any:
    values = [r.get(key) for r in runs]
    return values[-1] if values else None


def _parts(runs: list[dict[str, Any]]) -> dict[str, float]:
    names = sorted({k for r in runs for k in r.get("parts", {})})
    out = {n: median([r.get("parts", {}).get(n, 0.0) for r in runs]) for n in names}
    return {n: round(v, 3) for n, v in out.items() if v and v >= 0.0005}


def fit_own_seconds(run: dict[str, Any]) -> float:
    """The fit's own time in a run of ours: `Trainer.fit` less tracking's calls from inside it."""
    parts = run.get("parts", {})
    return parts.get("fit", 0.0) - sum(parts.get(name, 0.0) for name in FIT_TRACKING_PARTS)


def tracking_cost(untracked: dict[str, Any], tracked: dict[str, Any], logging: float) -> float:
    """What tracking added to one round, less model logging: the two runs' seconds around the fit's
    own time (tracking's calls from inside the fit counted in), tracked less untracked. The fit's
    own time, the same computation on both sides and most of a run, is where the machine's speed
    moves the seconds most (see benchmarks/README.md, "Noise"); it is left out on both sides."""
    around = [run["seconds"] - fit_own_seconds(run) for run in (untracked, tracked)]
    return around[1] - logging - around[0]


def compare(workload: W.Workload, a: str, b: str, measured: dict[str, Any]) -> dict[str, Any]:
    """One row: side b against side a, the ratio b/a as the median of the per-round ratios."""
    ra, rb = measured["runs"][a], measured["runs"][b]
    ratios = [y["seconds"] / x["seconds"] for x, y in zip(ra, rb, strict=True)]
    loss_a, loss_b = _final(ra), _final(rb)
    deterministic = workload.name != "s4"  # S4's shuffles differ: DataLoader draws from the global RNG
    device = measured.get("device", "cpu")
    # on a GPU, cuBLAS's choice of kernels and the fused optimizers (ours's default there) may
    # round differently from the tutorial's loop: the losses are compared within a tolerance
    tolerance = workload.loss_tolerance or (GPU_LOSS_TOLERANCE if device != "cpu" else 0.0)
    row: dict[str, Any] = {
        "workload": workload.name,
        "description": workload.description,
        "a": a,
        "b": b,
        "a_seconds": median([r["seconds"] for r in ra]),
        "b_seconds": median([r["seconds"] for r in rb]),
        "ratio": median(ratios),
        "ratios": [round(r, 4) for r in ratios],
        "a_runs": [round(r["seconds"], 4) for r in ra],
        "b_runs": [round(r["seconds"], 4) for r in rb],
        "a_final_loss": loss_a,
        "b_final_loss": loss_b,
        "device": device,
        "losses_identical": (loss_a == loss_b) if deterministic and not tolerance else None,
        "loss_tolerance": tolerance or None,
        "losses_close": (
            abs(loss_a - loss_b) <= tolerance * abs(loss_a)
            if tolerance and deterministic and loss_a is not None and loss_b is not None
            else None
        ),
        "a_minor_faults": median([r.get("minor_faults", 0) for r in ra]),
        "b_minor_faults": median([r.get("minor_faults", 0) for r in rb]),
        "a_peak_rss_kb": max((r["peak_rss_kb"] for r in ra), default=None),
        "b_peak_rss_kb": max((r["peak_rss_kb"] for r in rb), default=None),
        "a_setup": measured["ready"].get(a),
        "b_setup": measured["ready"].get(b),
        "b_parts": _parts(rb),
        "target": workload.target,
        "ratio_of_fastest": min(r["seconds"] for r in rb) / min(r["seconds"] for r in ra),
        "loadavg": measured["loadavg"],
        "note": workload.note,
    }
    # another process taking the cores shows as a side's rounds spreading, or as the median ratio
    # straying from the ratio of the two sides' fastest (least disturbed) runs
    row["noisy"] = noisy(ra) or noisy(rb) or abs(row["ratio"] / row["ratio_of_fastest"] - 1) > 0.1
    if workload.name == "s4":
        row["a_test_accuracy"] = _final(ra, "test_accuracy")
        row["b_test_accuracy"] = _final(rb, "test_accuracy")
        row["note"] = "; ".join(
            filter(None, [workload.note, "losses not comparable: the two shuffle orders differ"])
        )
    if workload.name == "tracking":
        logging = [  # every model logged (the final one, checkpoints as models) and registered
            sum(r.get("parts", {}).get(part, 0.0) for part in MODEL_LOGGING_PARTS) for r in rb
        ]
        row["model_logging_s"] = median(logging)
        whole = [(y["seconds"] - m) / x["seconds"] for x, y, m in zip(ra, rb, logging, strict=True)]
        row["ratio_excluding_model_logging"] = median(whole)
        row["whole_runs_error"] = median_error(whole)
        costs = [tracking_cost(x, y, m) for x, y, m in zip(ra, rb, logging, strict=True)]
        row["tracking_cost_s"] = median(costs)
        row["tracking_costs"] = [round(c, 4) for c in costs]
        row["whole_run_ratio"] = row["ratio"]  # model logging included
        row["ratio"] = median([1 + c / x["seconds"] for x, c in zip(ra, costs, strict=True)])
        # does tracking slow the fit's own computation (a check: this ratio moves with the machine)
        fits = [(fit_own_seconds(x), fit_own_seconds(y)) for x, y in zip(ra, rb, strict=True)]
        row["fit_own_ratio"] = median([y / x for x, y in fits]) if all(x > 0 for x, _ in fits) else None
        # a steady row's whole runs also see what tracking might slow inside the fit: judged too,
        # unless they are over the target by less than their own noise (3 rounds of a core whose
        # speed moves by 25 % cannot tell 1.08 from 1.00)
        over = row["ratio_excluding_model_logging"] - workload.target
        row["whole_runs_judged"] = not row["noisy"] and (
            over <= 0 or over > ERROR_MARGIN * row["whole_runs_error"]
        )
        row["passed"] = (
            row["ratio"] <= workload.target
            and row["model_logging_s"] <= TARGETS["model_logging"][0]
            and (not row["whole_runs_judged"] or row["ratio_excluding_model_logging"] <= workload.target)
        )
    else:
        row["passed"] = row["ratio"] <= workload.target
    gpu_limit = GPU_FIT_SECONDS.get(workload.name)
    if device.startswith("cuda") and gpu_limit is not None and b == "ours":
        # the H100 targets: seconds of training (ours's fit), at the full size only
        row["gpu_fit_s"] = row["b_parts"].get("fit")
        row["gpu_fit_limit"] = gpu_limit
        row["gpu_fit_passed"] = None if measured.get("quick") else (row["gpu_fit_s"] or 0.0) <= gpu_limit
    return row


def print_row(row: dict[str, Any]) -> None:
    a, b = SIDE_LABEL[row["a"]], SIDE_LABEL[row["b"]]
    whole = row.get("whole_run_ratio", row["ratio"])  # the tracking row judges another ratio
    print(
        f"  {a}: {row['a_seconds']:.3f} s   {b}: {row['b_seconds']:.3f} s   "
        f"ratio {b}/{a} = {whole:.3f} (median of {len(row['ratios'])} rounds: "
        f"{', '.join(f'{r:.3f}' for r in row['ratios'])})"
    )
    print(f"  ratio of the two sides' fastest runs: {row['ratio_of_fastest']:.3f}")
    same = row["losses_identical"]
    verdict = "identical" if same else ("DIFFER" if same is False else "not compared")
    if row.get("losses_close") is not None:
        verdict = f"{'within' if row['losses_close'] else 'NOT within'} {row['loss_tolerance']:g} relative"
    print(f"  final loss: {a} {row['a_final_loss']!r}, {b} {row['b_final_loss']!r} ({verdict})")
    if "a_test_accuracy" in row:
        print(f"  final test accuracy: {a} {row['a_test_accuracy']}, {b} {row['b_test_accuracy']}")
    print(
        f"  peak RSS: {a} {mb(row['a_peak_rss_kb'])}, {b} {mb(row['b_peak_rss_kb'])}; page faults per "
        f"run (median): {a} {row['a_minor_faults']:.0f}, {b} {row['b_minor_faults']:.0f}"
    )
    if row["b_parts"]:
        parts = ", ".join(f"{k} {v:.3f}" for k, v in row["b_parts"].items())
        print(f"  inside {b}'s run (median s; nested ones counted in their callers too): {parts}")
    if row.get("gpu_fit_s") is not None:
        judged = {True: "PASS", False: "MISS", None: "full size only"}[row["gpu_fit_passed"]]
        limit = f"<= {row['gpu_fit_limit']} s"
        print(f"  ours's training on {row['device']}: {row['gpu_fit_s']:.3f} s ({limit}: {judged})")
    if "model_logging_s" in row:
        print(
            f"  model logging (final and checkpoint models, register): {row['model_logging_s']:.3f} s; "
            f"ratio without it {row['ratio_excluding_model_logging']:.3f} "
            f"(standard error of that median {row.get('whole_runs_error', 0.0):.3f})"
        )
        fit_own = "-" if row.get("fit_own_ratio") is None else format(row["fit_own_ratio"], ".3f")
        print(
            f"  tracking's cost less model logging, around the fit's own time: "
            f"{row['tracking_cost_s'] * 1000:.1f} ms a run, ratio {row['ratio']:.3f}; "
            f"the fit's own time tracked / untracked: {fit_own} (moves with the machine)"
        )
    for note in filter(None, [row.get("note")]):
        print(f"  note: {note}")
    if row.get("noisy"):
        print(
            f"  NOISY: a side's rounds differ more than {NOISE}x, or the median ratio is more than 10 % "
            "off the ratio of the fastest runs (another process took the cores): run again, or "
            "with --threads 1"
        )


# -- the suite -------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    import importlib.metadata as md

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("torch", "torchvision", "mlflow", "dvc"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        **versions,
    }


def plan_groups(args: argparse.Namespace) -> list[tuple[W.Workload, list[str]]]:
    """Which workloads run, each with its sides; the tracking row rides on S0 small's group."""
    chosen = {w.name: w for w in W.workloads(args.quick)}
    plan: list[tuple[W.Workload, list[str]]] = []
    for name in ("s0_small", "s0_wide", "s1", "s4"):
        if name in args.only:
            sides = ["baseline", "ours"]
            if name == "s0_small" and "tracking" in args.only:
                sides.append("ours_untracked")  # the tracking row shares S0 small's runs of ours
            if name == "s1" and "s1_fused" in args.only:
                sides.append("ours_fused")  # and S1 fused its baseline runs
            plan.append((chosen[name], sides))
    if "tracking" in args.only and "s0_small" not in args.only:
        plan.append((chosen["tracking"], ["ours_untracked", "ours"]))
    return plan


def start_zygotes(
    plan: list[tuple[W.Workload, list[str]]], args: argparse.Namespace, scratch: Path, env: dict[str, str]
) -> dict[str, Zygote]:
    """A zygote per kind of side the plan has (and `ours` for the scaling run)."""
    kinds = {"baseline" if side == "baseline" else "ours" for _, sides in plan for side in sides}
    if "scaling" in args.only:
        kinds.add("ours")
    return {kind: Zygote(kind, env, scratch) for kind in sorted(kinds)}


def measure_groups(
    plan: list[tuple[W.Workload, list[str]]],
    args: argparse.Namespace,
    scratch: Path,
    zygotes: dict[str, Zygote],
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if not plan:
        return rows
    started = time.perf_counter()
    chosen = {w.name: w for w in W.workloads(args.quick)}
    groups = [Group(workload, sides, args, scratch) for workload, sides in plan]
    for group in groups:  # data and params, here, while the zygotes import
        group.prepare(scratch)
    phases = [f"inputs {time.perf_counter() - started:.0f} s"]
    for group in groups:
        group.spawn(zygotes)
    phases.append(f"imports {time.perf_counter() - started:.0f} s")
    for group in groups:
        group.start_warmup(zygotes)
    for group in groups:
        group.finish_warmup()
    phases.append(f"warm-ups {time.perf_counter() - started:.0f} s")
    print(
        f"set-up and warm-up of {sum(len(g.workers) for g in groups)} worker processes: "
        f"{time.perf_counter() - started:.0f} s (done: {', '.join(phases)})",
        flush=True,
    )
    for group in groups:
        workload, sides = group.workload, group.sides
        print(f"\n== {workload.name}: {workload.description}", flush=True)
        started = time.perf_counter()
        try:
            if group.error:
                raise WorkerError(group.error)
            measured = group.measure()
        except WorkerError as exc:
            print(f"  ERROR: {exc}")
            names = [workload.name] + (["tracking"] if "ours_untracked" in sides else [])
            names += ["s1_fused"] if "ours_fused" in sides else []
            rows += [
                {"workload": n, "ratio": None, "error": str(exc)[-3000:], "passed": False} for n in names
            ]
            continue
        if "baseline" in sides:
            rows.append(compare(workload, "baseline", "ours", measured))
            print_row(rows[-1])
        if "ours_fused" in sides:
            print(f"\n== s1_fused: {chosen['s1_fused'].description}")
            rows.append(compare(chosen["s1_fused"], "baseline", "ours_fused", measured))
            print_row(rows[-1])
        if "ours_untracked" in sides:
            print(f"\n== tracking: {chosen['tracking'].description}")
            rows.append(compare(chosen["tracking"], "ours_untracked", "ours", measured))
            print_row(rows[-1])
        print(
            f"  ({time.perf_counter() - started:.0f} s for this workload, load average "
            f"{measured['loadavg'][0]:.1f} -> {measured['loadavg'][1]:.1f})",
            flush=True,
        )
    return rows


def scaling_row(args: argparse.Namespace, scratch: Path, zygote: Zygote) -> dict[str, Any]:
    top = "10^5 (quick mode; full: 10^6)" if args.quick else "10^6"
    print(f"\n== scaling: one epoch of our fit loop (default params) at 10^3 ... {top} samples", flush=True)
    spec = {"workload": "scaling", "side": "scaling", "quick": args.quick}
    try:
        worker = zygote.fork(spec, {}, scratch / "scaling.log")
    except WorkerError as exc:
        print(f"  ERROR: {exc}")
        return {"workload": "scaling", "ratio": None, "error": str(exc)[-2000:], "passed": False}
    try:
        worker.read()
        sizes = worker.call("run")["sizes"]
    except WorkerError as exc:
        print(f"  ERROR: {exc}")
        return {"workload": "scaling", "ratio": None, "error": str(exc)[-2000:], "passed": False}
    finally:
        worker.close()
    growth = [b["seconds"] / a["seconds"] for a, b in itertools.pairwise(sizes)]
    for s in sizes:
        spread = f"; median {s['median_s'] * 1000:.1f} ms" if "median_s" in s else ""
        first = f"; a fit's first epoch {s['first_epoch_s'] * 1000:.1f} ms" if "first_epoch_s" in s else ""
        print(
            f"  {s['n_samples']:>9,} samples: {s['seconds'] * 1000:9.1f} ms "
            f"(fastest of {s['repeats']} epochs{spread}{first})"
        )
    labels = [f"10^{i + 3}->10^{i + 4}" for i in range(len(growth))]
    decades = zip(labels, growth, strict=True)
    print("  growth per decade: " + ", ".join(f"{lab} x{g:.2f}" for lab, g in decades))
    low, high = SCALING_RANGE
    return {
        "workload": "scaling",
        "ratio": None,
        "sizes": sizes,
        "growth": dict(zip(labels, growth, strict=True)),
        "target": f"each decade x{low}..x{high}",
        "passed": all(low <= g <= high for g in growth),
    }


def overhead_rows(args: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    print("\n== pipeline overhead (temporary copy of the repository)", flush=True)
    measured = overhead.measure(scratch, args.quick)
    rows = []
    for name in ("dvc_repro_clean", "dvc_repro_noop", "pipeline_help"):
        result = measured.get(name, {"error": "not measured"})
        limit = TARGETS[name][0]
        seconds = result.get("seconds")
        passed = seconds is not None and seconds <= limit and "error" not in result
        rows.append({"workload": name, "ratio": None, "target": limit, "passed": passed, **result})
        if "error" in result:
            print(f"  {name}: ERROR {result['error']}")
    return rows


def verdict(ok: bool, row: dict[str, Any]) -> str:
    return ("PASS" if ok else "MISS") + (" (noisy)" if row.get("noisy") else "")


def table(rows: list[dict[str, Any]]) -> list[str]:
    out = [f"{'target':<44} {'measured':>24} {'limit':>12}  result", "-" * 90]
    for row in rows:
        name = row["workload"]
        mark = verdict(bool(row.get("passed")), row)
        if row.get("error"):
            out.append(f"{name:<44} {'error':>24} {'':>12}  MISS")
            continue
        if name == "tracking":
            out.append(
                f"{'tracking: on / off, less model logging':<44} "
                f"{row['ratio']:>24.3f} {'<= 1.05':>12}  "
                f"{'PASS' if row['ratio'] <= row['target'] else 'MISS'}"
            )
            whole, error = row["ratio_excluding_model_logging"], row.get("whole_runs_error", 0.0)
            if row["whole_runs_judged"]:
                judged = "PASS" if whole <= row["target"] else "MISS"
            else:
                judged = "noisy: not judged" if row["noisy"] else "within its noise: not judged"
            measured = f"{whole:.3f} +- {error:.3f}"
            label = "  the same, whole runs (median of pairs)"
            out.append(f"{label:<44} {measured:>24} {'<= 1.05':>12}  {judged}")
            out.append(
                f"{'tracking: model logging seconds':<44} {row['model_logging_s']:>24.3f} "
                f"{'<= 1.5 s':>12}  "
                f"{verdict(row['model_logging_s'] <= TARGETS['model_logging'][0], row)}"
            )
            continue
        if row.get("ratio") is not None:
            label = f"{name}: ratio ours/baseline"
            out.append(
                f"{label:<44} {row['ratio']:>24.3f} {'<= ' + format(row['target'], '.2f'):>12}  {mark}"
            )
            if row.get("losses_close") is not None:
                close, tolerance = row["losses_close"], f"rel. {row['loss_tolerance']:g}"
                out.append(
                    f"{name + ': final loss close to the baseline':<44} "
                    f"{'within' if close else 'outside':>24} {tolerance:>12}  {'PASS' if close else 'MISS'}"
                )
            if row.get("gpu_fit_passed") is not None:
                label = f"{name}: ours's training on {row['device']} (s)"
                limit = f"<= {row['gpu_fit_limit']:g}"
                passed = "PASS" if row["gpu_fit_passed"] else "MISS"
                out.append(f"{label:<44} {row['gpu_fit_s']:>24.3f} {limit:>12}  {passed}")
            if row.get("losses_identical") is not None:
                same = row["losses_identical"]
                out.append(
                    f"{name + ': final loss equals the baseline':<44} "
                    f"{'identical' if same else 'differs':>24} {'identical':>12}  "
                    f"{'PASS' if same else 'MISS'}"
                )
        elif name == "scaling":
            growth = ", ".join(f"x{g:.2f}" for g in row["growth"].values())
            label = f"scaling: one epoch, 10^3..10^{3 + len(row['growth'])} samples"
            out.append(f"{label:<44} {growth:>24} {'x7.5..x12.5':>12}  {mark}")
        else:
            out.append(
                f"{name + ' (s)':<44} {row['seconds']:>24.3f} {'<= ' + format(row['target'], 'g'):>12}  "
                f"{mark}"
            )
    return out


def profile_workload(args: argparse.Namespace, scratch: Path, env: dict[str, str]) -> None:
    name = args.profile
    side = "ours" if args.side is None else args.side
    spec = {"workload": name, "side": side, "quick": args.quick, "cwd": str(scratch), "device": args.device}
    worker = Worker(spec, env, scratch / f"profile-{name}.log")
    try:
        worker.read()
        worker.call(
            json.dumps(
                {"inputs": prepare_inputs(W.by_name(name, args.quick), side, scratch, scratch, args.device)}
            )
        )
        worker.call("warmup")
        result = worker.call("profile")
    finally:
        worker.close()
    print(f"== profile of {name}, {side}: {result['seconds']:.3f} s (cProfile adds overhead)")
    if result.get("parts"):
        print("parts: " + ", ".join(f"{k} {v:.3f}" for k, v in result["parts"].items()))
    for key in ("tottime", "cumulative"):
        print(f"\n-- top entries by {key} --")
        print(result["profile"][key])


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser(
        prog="python -m benchmarks",
        description="Tutorial-style baselines against the pipeline's own training, alternated A B A B; "
        "then the pipeline's overhead and scaling; then every target with PASS / MISS.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="S0-wide 200 epochs, S1 3, S4 500 iterations, scaling to 10^5, one clean repro",
    )
    parser.add_argument("--json", metavar="PATH", type=rows_path, help="write the rows as a JSON list")
    parser.add_argument(
        "--reps",
        type=int,
        default=None,
        help="rounds of A B per workload (default: 3; full runs: S0 small and tracking 15, S1 9)",
    )
    everything = "s0_small,s0_wide,s1,s1_fused,s4,tracking,scaling,overhead"
    parser.add_argument("--only", default=everything, help=f"comma-separated subset of {everything}")
    parser.add_argument(
        "--threads",
        type=positive,
        default=None,
        help="OMP/MKL threads for every side and the dvc runs (default: torch's own choice)",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="where both sides of every workload train (default cpu; scaling and overhead: as is)",
    )
    names = [w.name for w in W.workloads(quick=False)]
    parser.add_argument(
        "--profile", metavar="WORKLOAD", choices=names, help=f"cProfile one run of one of {', '.join(names)}"
    )
    parser.add_argument("--side", choices=list(SIDE_LABEL), help="with --profile: which side (ours)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder and print it")
    args = parser.parse_args(argv)
    args.only = set(args.only.split(","))
    unknown = args.only - set(everything.split(","))
    if unknown:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}")
    if args.reps is not None and args.reps < 3:
        parser.error("--reps: at least 3 rounds (A B A B A B)")
    if args.side and not args.profile:
        parser.error("--side: only with --profile WORKLOAD")
    return args


def device_problem(device: str) -> str | None:
    """Why the workloads cannot train on `device` here (None: they can): the pipeline's own check
    of `train.device` (imports torch only for an accelerator)."""
    from pipeline.config import check_device
    from pipeline.errors import ConfigError

    try:
        check_device(device)
    except ConfigError:
        import torch

        built = f"torch {torch.__version__}, CUDA {torch.version.cuda or 'not built in'}"
        return f"--device {device}: no CUDA device on this machine ({built}); leave it out to run on the CPU"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    problem = device_problem(args.device)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="ffn-bench-"))
    env = worker_env(scratch, args.threads)
    info = machine()
    try:
        if args.profile:
            W.mnist_root()
            profile_workload(args, scratch, env)
            return 0
        print(
            f"ffn-pipeline benchmarks ({'quick' if args.quick else 'full'}): {info['cores']} cores "
            f"({info['cpu']}), torch {info['torch']}, mlflow {info['mlflow']}, dvc {info['dvc']}, "
            f"python {info['python']}; device: {args.device}; threads: {args.threads or 'torch default'}; "
            f"load average now {os.getloadavg()[0]:.1f}"
        )
        busy = os.getloadavg()[0]
        if busy > 0.5 and not args.threads:
            print(
                f"WARNING: the machine is busy (load average {busy:.1f}): with torch's default "
                "intra-op threads, small ops wait for descheduled threads and timings swing 10x "
                "and more. --threads 1 gives steadier numbers (the same for every side)."
            )
        if "s4" in args.only:
            t = time.perf_counter()
            W.mnist_root()
            print(f"MNIST-shaped IDX files in {W.CACHE} ({time.perf_counter() - t:.1f} s)")
        plan = plan_groups(args)
        zygotes = start_zygotes(plan, args, scratch, env)
        try:
            rows = measure_groups(plan, args, scratch, zygotes)
            if "scaling" in args.only:
                rows.append(scaling_row(args, scratch, zygotes["ours"]))
        finally:
            for zygote in zygotes.values():
                zygote.close()
        if "overhead" in args.only:
            rows += overhead_rows(args, scratch)
        total = time.perf_counter() - started
        print(f"\n== targets ({'quick' if args.quick else 'full'} run, {total:.0f} s)")
        print("\n".join(table(rows)))
        if args.json:
            for row in rows:
                row["machine"] = info
                row["mode"] = "quick" if args.quick else "full"
            write_rows(args.json, rows)
            print(f"rows written to {args.json}")
        return 0
    finally:
        if args.keep:
            print(f"scratch folder kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
