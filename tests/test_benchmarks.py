"""The benchmark suite's baselines (benchmarks/workloads.py, tutorial-style loops) and our pipeline
compute the same final loss where the maths is the same: every lever of ours keeps results
identical to the plain loop. No timing is asserted here; `python -m benchmarks` measures."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from pipeline.config import params_from_dict
from pipeline.stages import Layout, data, split, train

sys.path.insert(0, str(REPO))
from benchmarks import workloads as W


@pytest.fixture
def one_thread():
    """Steady on a busy machine; both sides run under the same setting, so the same maths."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# every device this machine has: the suite's --device cuda trains both sides there
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def ours_final_loss(name: str, size: int, root, device: str = "cpu") -> float:
    """Our real code path, as the suite runs it (tracking off: it does not touch the maths)."""
    raw = W.ours_params(W.by_name(name, quick=True), tracking=False, size=size, device=device)
    params = params_from_dict(raw)
    assert params.train.device == device  # never `auto`: both sides on the same device
    layout = Layout(root)
    data(params, layout)
    split(params, layout)
    return train(params, layout)["train_loss"]


def same_loss(ours: float, baseline: float, device: str) -> bool:
    """Bit for bit on the CPU; on a GPU within the suite's tolerance (cuBLAS, fused optimizers)."""
    if device == "cpu":
        return ours == baseline
    from benchmarks.suite import GPU_LOSS_TOLERANCE

    return abs(ours - baseline) <= GPU_LOSS_TOLERANCE * abs(baseline)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("name", "hidden", "epochs"), [("s0_small", 10, 20), ("s0_wide", 4096, 3)])
def test_s0_baseline_and_ours_same_final_loss(name, hidden, epochs, device, workdir, one_thread):
    baseline = W.baseline_s0(*W.blobs4_split(), hidden=hidden, epochs=epochs, device=device)["final_loss"]
    ours = ours_final_loss(name, epochs, workdir, device)
    assert same_loss(ours, baseline, device), (ours, baseline)


@pytest.mark.parametrize("device", DEVICES)
def test_s1_baseline_and_ours_same_final_loss(device, workdir, one_thread):
    baseline = W.baseline_s1(*W.blobs64(), epochs=1, device=device)["final_loss"]
    ours = ours_final_loss("s1", 1, workdir, device)
    assert same_loss(ours, baseline, device), (ours, baseline)


def test_device_cuda_runs_there_or_is_refused_in_one_line(tmp_path):
    """`--device cuda`: on a machine without CUDA, one line and exit 2 before any work; with one,
    a quick S0 small row trained there (both sides), its losses within the GPU tolerance."""
    out = tmp_path / "rows.json"
    command = [sys.executable, "-m", "benchmarks", "--device", "cuda", "--quick", "--only", "s0_small"]
    proc = subprocess.run(
        [*command, "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    if not torch.cuda.is_available():
        assert proc.returncode == 2
        assert proc.stderr.strip().count("\n") == 0 and "no CUDA device" in proc.stderr, proc.stderr
        assert proc.stdout == "" and not out.exists()
        return
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    assert row["workload"] == "s0_small" and row["device"] == "cuda"
    assert row["losses_close"] is True, row


@pytest.mark.parametrize(
    ("module", "args", "expected"),
    [
        ("benchmarks", ["--threads", "0"], "argument --threads: expected a whole number >= 1, not 0"),
        ("benchmarks", ["--reps", "2"], "--reps: at least 3 rounds (A B A B A B)"),
        ("benchmarks", ["--only", "s9"], "--only: unknown s9"),
        ("benchmarks", ["--profile", "s9"], "argument --profile: invalid choice: 's9'"),
        ("benchmarks", ["--side", "ours"], "--side: only with --profile WORKLOAD"),
        ("benchmarks", ["--json", "{missing}/rows.json"], "argument --json: {missing}/rows.json: no folder"),
        ("benchmarks", ["--json", "{tmp}"], "argument --json: {tmp} is a folder"),
        ("benchmarks.graphs", ["--json", "{missing}/g.json"], "argument --json: {missing}/g.json: no folder"),
        ("benchmarks.levers", ["--repeats", "0"], "argument --repeats: expected a whole number >= 1"),
        ("benchmarks.levers", ["--only", "s9"], "--only: unknown s9; expected any of s1_adam"),
    ],
)
def test_bad_arguments_are_refused_in_one_line_before_any_work(tmp_path, module, args, expected):
    """A bad argument (a `--json` path the rows could not be written to, found only after a run of
    minutes until 2026-12-04, with a traceback) is one line naming it, exit 2, nothing written."""
    names = {"missing": str(tmp_path / "missing"), "tmp": str(tmp_path)}
    args = [a.format(**names) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and proc.stdout == "", (proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"python -m {module}: "), proc.stderr
    assert expected.format(**names) in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_rows_are_written_whole_or_not_at_all(tmp_path):
    """A row that cannot be written (here: one whose value has no text) leaves the file that was
    there as it was, and nothing beside it."""
    from benchmarks.command_line import rows_path, write_rows

    path = rows_path(str(tmp_path / "rows.json"))
    assert list(tmp_path.iterdir()) == []  # the check writes nothing that stays
    write_rows(path, [{"workload": "s1", "ratio": 0.7}])
    assert json.loads(path.read_text()) == [{"workload": "s1", "ratio": 0.7}]
    with pytest.raises(TypeError):
        write_rows(path, [{"workload": "s0_small"}, {"workload": Unwritable()}])
    assert json.loads(path.read_text()) == [{"workload": "s1", "ratio": 0.7}]  # the old rows kept
    assert list(tmp_path.iterdir()) == [path]


class Unwritable:
    def __str__(self) -> str:
        raise TypeError("no text for this")


def run_graphs(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    out = tmp_path / "graphs.json"
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "benchmarks.graphs", *args, "--rounds", "1", "--json", str(out)]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    return proc, json.loads(out.read_text()) if out.exists() else []


def test_the_graphs_check_runs_both_sides_and_compares_them(tmp_path):
    """`python -m benchmarks.graphs`: on the CPU both sides are the eager loop (said, with why),
    the same history and weights; `--device cuda` without CUDA is refused in one line, and with
    CUDA S0 small's epochs are replayed, bit for bit those of the eager loop."""
    proc, rows = run_graphs(tmp_path, "--device", "cpu", "--epochs", "6", "--only", "s0_small,s0_wide_adam")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [row["case"] for row in rows] == ["s0_small", "s0_wide_adam"]
    for row in rows:
        assert row["replayed"] is False and "not CUDA" in row["failure"], row
        assert row["same_history"] is True and row["max_weight_gap"] == 0.0 and row["epochs"] == 6
        assert row["ratio"] == pytest.approx(row["graphs_s"] / row["eager_s"])
    assert proc.stdout.count("eager (training on cpu, not CUDA)") == 2
    proc, rows = run_graphs(tmp_path, "--device", "cuda", "--epochs", "8", "--only", "s0_small")
    if not torch.cuda.is_available():
        assert proc.returncode == 2 and rows == []
        assert proc.stderr.strip().count("\n") == 0 and "no CUDA device" in proc.stderr, proc.stderr
        return
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = rows
    assert row["replayed"] is True and row["same_history"] is True and row["max_weight_gap"] == 0.0, row


def test_the_graphs_check_refuses_unknown_cases_in_one_line(tmp_path):
    proc, rows = run_graphs(tmp_path, "--device", "cpu", "--only", "s9")
    assert proc.returncode == 2 and rows == [] and proc.stdout == ""
    expected = "--only s9: expected cases from s0_small, s0_wide, s0_wide_adam and counts >= 1"
    assert proc.stderr.strip() == expected


def test_named_experiments_describe_the_baselines(tmp_path):
    """conf/experiment still holds the tutorials' workloads (the suite refuses to run otherwise)."""
    for workload in W.workloads(quick=False):
        raw = W.ours_params(workload, size=7, mnist=tmp_path)
        params = params_from_dict(raw)
        if workload.name == "s4":
            assert (params.train.max_steps, params.train.test_every_steps) == (7, 500)
            assert params.data.root == str(tmp_path) and params.data.download is False
        else:
            assert params.train.epochs == 7
        assert params.tracking.enabled and params.train.progress == "off"


def test_entry_point_help():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout and "--json" in proc.stdout


def test_the_probe_counts_every_logged_model_as_model_logging(workdir, one_thread):
    """The tracking row subtracts model logging (MODEL_LOGGING_PARTS): checkpoints logged as models
    (through `Tracker.log_model`, from the run's model folder) must be among the parts it subtracts."""
    import mlflow  # noqa: F401  (imported, as in the suite's sides: tracking stays in this process)

    from benchmarks.suite import MODEL_LOGGING_PARTS
    from benchmarks.worker import Probe

    raw = W.ours_params(W.by_name("s0_small", quick=True), tracking=True, size=4)
    raw["train"]["checkpoint_every"] = 2
    params = params_from_dict(raw)
    layout = Layout(workdir)
    data(params, layout)
    split(params, layout)
    probe = Probe()
    probe.install()
    train(params, layout)
    metric_rows = probe.seconds.get("log_metrics", 0.0)  # before take() rounds 4 epochs' rows to 0
    parts = probe.take()
    assert parts.get("log_checkpoint_model", 0) > 0 and parts["log_model"] > 0, parts
    assert parts["log_checkpoint_model"] <= parts["log_checkpoint"], parts  # nested in it
    logging = sum(parts.get(name, 0.0) for name in MODEL_LOGGING_PARTS)
    expected = parts["log_checkpoint_model"] + parts["log_model"] + parts["register_model"]
    assert logging == pytest.approx(expected), parts
    # tracking's calls from inside the fit, which the row counts as tracking's cost
    assert metric_rows > 0 and parts["fit"] > parts["log_checkpoint"] + parts["log_metrics"], parts


def _run(seconds: float, **parts: float) -> dict:
    return {"seconds": seconds, "parts": parts, "peak_rss_kb": 1}


def _tracking_row(untracked: list[dict], tracked: list[dict]) -> dict:
    from benchmarks.suite import compare

    measured = {"runs": {"ours_untracked": untracked, "ours": tracked}, "ready": {}, "loadavg": [0, 0]}
    return compare(W.by_name("tracking", quick=True), "ours_untracked", "ours", measured)


def test_the_tracking_row_counts_what_tracking_adds_around_the_fits_own_time():
    """The machine's speed moves the fit's own time (the same computation on both sides) by tens of
    percent from one run to the next; the row's ratio counts what tracking adds around it: the
    run's start and end, and its calls from inside the fit, less model logging."""
    # each round: a slow fit on one side, a fast one on the other; tracking adds 20 ms around the
    # fit and 5 ms of metric rows and 30 ms of checkpoint models (model logging) inside it
    untracked = [_run(0.60, fit=0.55, log_metrics=0.001), _run(0.35, fit=0.30, log_metrics=0.001)]
    inside = {"log_metrics": 0.006, "log_checkpoint": 0.03, "log_checkpoint_model": 0.03}
    logged = {"log_model": 0.03, "register_model": 0.01}
    tracked = [_run(fit + 0.05 + 0.02 + 0.04, fit=fit, **inside, **logged) for fit in (0.44, 0.64)]
    row = _tracking_row(untracked, tracked)
    assert row["tracking_costs"] == [pytest.approx(0.025), pytest.approx(0.025)]
    assert row["ratio"] == pytest.approx(1 + (0.025 / 0.60 + 0.025 / 0.35) / 2)  # the verdict's
    assert row["model_logging_s"] == pytest.approx(0.07)
    assert row["ratio_excluding_model_logging"] > 1.2  # whole runs: the fits' speeds dominate
    assert row["whole_run_ratio"] == pytest.approx((0.55 / 0.60 + 0.75 / 0.35) / 2)
    assert row["passed"] is False  # 1.057 > 1.05
    assert row["fit_own_ratio"] == pytest.approx((0.404 / 0.549 + 0.604 / 0.299) / 2)
    assert row["noisy"] and not row["whole_runs_judged"]  # 0.35 s and 0.60 s runs: not judged


def test_a_steady_tracking_row_is_judged_on_its_whole_runs_too():
    """Where the machine held still, the whole runs also show what tracking may slow inside the
    fit (the cost around it cannot): the row passes only if both ratios are within the target."""
    untracked = [_run(0.400, fit=0.380, log_metrics=0.001) for _ in range(3)]
    # 10 ms around the fit (1.025), and a fit 20 ms slower tracked: 1.075 in whole runs
    tracked = [_run(0.430, fit=0.400 + 0.005, log_metrics=0.006) for _ in range(3)]
    row = _tracking_row(untracked, tracked)
    assert not row["noisy"] and row["whole_runs_judged"]
    assert row["ratio"] == pytest.approx(1.025) and row["ratio_excluding_model_logging"] == pytest.approx(
        1.075
    )
    assert row["passed"] is False
    tracked = [_run(0.410, fit=0.380 + 0.005, log_metrics=0.006) for _ in range(3)]  # the same fit
    row = _tracking_row(untracked, tracked)
    assert row["passed"] is True
    assert row["fit_own_ratio"] == pytest.approx(1.0)


def test_whole_runs_over_the_target_by_less_than_their_noise_are_not_judged():
    """Three rounds of a core whose speed moves by a quarter cannot tell 1.2 from 1.0: whole runs
    over the target within two standard errors of their median are not judged; a slowdown far
    beyond their spread is (`python -m benchmarks --quick` read 1.079 as a MISS here)."""
    logged = {"log_model": 0.03, "register_model": 0.01}

    def row_for(untracked_s: tuple[float, ...], tracked_fits: tuple[float, ...]) -> dict:
        untracked = [_run(s, fit=s - 0.05, log_metrics=0.001) for s in untracked_s]
        tracked = [_run(f + 0.11, fit=f, log_metrics=0.006, **logged) for f in tracked_fits]
        return _tracking_row(untracked, tracked)

    row = row_for((0.70, 0.60, 0.84), (0.78, 0.80, 0.62))  # per round 1.16, 1.45, 0.87
    assert not row["noisy"] and row["ratio_excluding_model_logging"] == pytest.approx(0.85 / 0.70)
    assert row["whole_runs_error"] > (row["ratio_excluding_model_logging"] - 1.05) / 2
    assert not row["whole_runs_judged"] and row["passed"] is True  # 20 ms around the fit: 1.036
    row = row_for((0.40, 0.42, 0.44), (0.48, 0.51, 0.53))  # the fit a fifth slower, every round
    assert row["whole_runs_error"] < 0.02 and row["ratio_excluding_model_logging"] > 1.2
    assert not row["noisy"] and row["whole_runs_judged"] and row["passed"] is False


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], {"s0_small": 15, "tracking": 15, "s1": 9, "s1_fused": 9, "s0_wide": 3, "s4": 3}),
        (["--quick"], {"s0_small": 3, "tracking": 3, "s1": 3, "s1_fused": 3, "s0_wide": 3, "s4": 3}),
        (["--reps", "4"], {"s0_small": 4, "tracking": 4, "s1": 4, "s1_fused": 4, "s0_wide": 4, "s4": 4}),
    ],
)
def test_rounds_per_workload(tmp_path, argv, expected):
    """A full run takes the median of more rounds where a round takes seconds; `--reps` sets all."""
    from benchmarks.suite import Group, parse

    args = parse(argv)
    rounds = {w.name: Group(w, ["baseline", "ours"], args, tmp_path).reps for w in W.workloads(args.quick)}
    assert rounds == expected


def test_each_side_of_a_pair_runs_first_as_often(tmp_path):
    """Rounds alternate the sides' order (A B C, C B A, ...): over every two rounds each side of
    every pair runs first once, so a machine drifting over a few rounds favours neither."""
    from itertools import combinations

    from benchmarks.suite import Group, parse

    group = Group(W.by_name("s0_small", False), ["baseline", "ours", "ours_untracked"], parse([]), tmp_path)
    orders = [group.order(round_) for round_ in range(4)]
    assert orders[0] == ["baseline", "ours", "ours_untracked"]
    for a, b in combinations(orders[0], 2):
        firsts = [order.index(a) < order.index(b) for order in orders]
        assert firsts.count(True) == firsts.count(False) == 2


def test_tracking_off_runs_in_the_tracked_sides_own_process(tmp_path):
    """The tracking row compares one process with itself: ours hosts its untracked runs (no
    process of their own), S0 small's baseline still has one."""
    from benchmarks.suite import Group, parse

    group = Group(W.by_name("s0_small", False), ["baseline", "ours", "ours_untracked"], parse([]), tmp_path)
    assert group.host == {"ours_untracked": "ours"}
    alone = Group(W.by_name("s0_small", False), ["baseline", "ours_untracked"], parse([]), tmp_path)
    assert alone.host == {}  # without its host it runs in a process of its own


def test_a_hosted_side_runs_its_own_params_in_the_hosts_process(workdir, one_thread):
    """The tracked side's process, given the untracked side's inputs, runs each on request: the
    untracked run leaves no MLflow run, the tracked one does, and both end at the same loss."""
    from benchmarks import worker
    from benchmarks.suite import prepare_inputs

    workload = W.by_name("s0_small", True)
    sides = ("ours", "ours_untracked")
    inputs = {side: prepare_inputs(workload, side, workdir, workdir / "group") for side in sides}
    host = worker.Ours({"workload": "s0_small", "side": "ours", "quick": True})
    host.set_inputs({**inputs["ours"], "hosted": {"ours_untracked": inputs["ours_untracked"]}})
    tracked, untracked = host.run(), host.run(side="ours_untracked")
    assert tracked["final_loss"] == untracked["final_loss"]
    runs = {s: json.loads((workdir / "group" / s / "models" / "run.json").read_text()) for s in sides}
    assert runs["ours"]["run_id"] and runs["ours_untracked"]["run_id"] is None


def test_scaling_times_a_fits_second_epoch(one_thread, monkeypatch):
    """The scaling row's epoch is a fit's second (what every epoch costs), its first shown beside."""
    from benchmarks.worker import EpochClock, Scaling
    from pipeline.data import make_dataset
    from pipeline.model import build_model
    from pipeline.split import split_dataset
    from pipeline.training import Trainer, to_tensors

    params = params_from_dict(W.ours_params(W.by_name("s0_small", quick=True), tracking=False, size=3))
    parts = split_dataset(make_dataset(params.data), params.split)
    cpu = torch.device("cpu")
    train_set = to_tensors(parts["train"].features, parts["train"].targets, "cross_entropy", cpu)
    clock = EpochClock()
    Trainer(build_model(params.model, 2, 4), params.train, "cross_entropy", cpu).fit(train_set, None, [clock])
    assert len(clock.ends) == 3 and clock.ends == sorted(clock.ends)  # one mark per epoch
    monkeypatch.setattr(Scaling, "QUICK_SIZES", (1_000, 10_000))  # 10^5 would take seconds here
    gc.collect()
    gc.freeze()  # as the suite's worker does: each repeat's collection walks only what it made
    try:
        sizes = Scaling({"quick": True}).run()["sizes"]
    finally:
        gc.unfreeze()
    assert [s["n_samples"] for s in sizes] == [1_000, 10_000]
    assert all(0 < s["seconds"] <= s["median_s"] and s["first_epoch_s"] > 0 for s in sizes)
    assert all(s["repeats"] >= Scaling.EPOCHS - 1 for s in sizes)  # timed: all but each fit's first epoch


def test_the_s1_adam_lever_measures_s1s_own_tensors(capsys):
    from benchmarks.levers import s1_adam_state

    figures = s1_adam_state(epochs=1, repeats=1)
    printed = capsys.readouterr().out
    assert figures["n"] == 64 * 256 + 256 + 256 * 1024 + 1024 + 1024 + 1  # S1's parameters
    assert 0 <= figures["sqrt_off"] < figures["n"] and 0 <= figures["subnormal"] < 1
    assert figures["own_s"] > 0 and figures["normal_s"] > 0
    assert f"in {figures['sqrt_off']:,} of {figures['n']:,}" in printed
