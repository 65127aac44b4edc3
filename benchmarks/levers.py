"""What-if measurements behind the suggestions in benchmarks/README.md: each lever timed against
the plain way in one process (alternating, best of N), and whether it keeps the final loss
identical to the tutorial loop.

    python -m benchmarks.levers [--threads 1] [--repeats 5] [--only s1_adam,s1_metrics,s0_small_fit]

Levers: `s1_adam` (Adam's per-tensor loop, `foreach=True`, `fused=True`), `s1_metrics` (the fit
loop's per-batch metric tensors against `loss.item()`), `s0_small_fit` and `s1_fit` (our fit loop,
no tracking, with the direct backward pass and with autograd, against the tutorial loop),
`s1_adam_state` (Adam's passes on S1's own moments against random ones of the same shapes, and
how often torch's `sqrt` differs from the correctly rounded one: what a one-pass kernel meets).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from benchmarks import workloads as W
from benchmarks.command_line import Parser, positive


def best_of(variants: dict[str, Callable[[], float]], repeats: int) -> dict[str, tuple[float, float]]:
    """name -> (best seconds, final loss), the variants alternated `repeats` times after a warm-up."""
    for run in variants.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    losses: dict[str, float] = {}
    for _ in range(repeats):
        for name, run in variants.items():
            started = time.perf_counter()
            losses[name] = run()
            seconds[name].append(time.perf_counter() - started)
    return {name: (min(seconds[name]), losses[name]) for name in variants}


def report(title: str, results: dict[str, tuple[float, float]]) -> None:
    first, (base, base_loss) = next(iter(results.items()))
    print(f"\n== {title}")
    for name, (seconds, loss) in results.items():
        same = "identical" if loss == base_loss else f"differs ({loss!r} vs {base_loss!r})"
        print(f"  {name:<34} {seconds:8.3f} s  x{seconds / base:.3f} of {first}   final loss {same}")


def s1_loop(epochs: int, adam: dict[str, Any], metrics: bool = False) -> Callable[[], float]:
    """S1's tutorial loop with Adam options, or with our per-batch metric tensors for `.item()`."""
    import torch
    from torch import nn

    x, y = W.blobs64()
    X, Y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)

    def run() -> float:
        torch.manual_seed(2020)
        model = nn.Sequential(
            nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1)
        )
        criterion = nn.BCEWithLogitsLoss()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, **adam)
        total, sums = 0.0, torch.zeros(3, dtype=torch.float64)
        for _ in range(epochs):
            total, sums = 0.0, torch.zeros(3, dtype=torch.float64)
            for i in range(0, len(X), 16):
                xb, yb = X[i : i + 16], Y[i : i + 16]
                outputs = model(xb)
                loss = criterion(outputs[:, 0], yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if metrics:  # what pipeline.training.Metrics.add does for BCE
                    weighted = loss.detach().double() * len(yb)
                    hits = ((outputs.detach()[:, 0] > 0).float() == yb).sum().double()
                    sums += torch.stack([weighted, hits, torch.zeros_like(hits)])
                else:
                    total += loss.item()
        return float(sums[0] / len(X)) if metrics else total / (len(X) // 16)

    return run


def s1_adam_state(epochs: int, repeats: int) -> dict[str, float]:
    """Adam's passes on S1's moments after `epochs` of the tutorial loop, against random numbers
    of the same shapes at scales where nothing underflows; torch's sqrt against IEEE's."""
    import numpy as np
    import torch
    from torch import nn

    from pipeline.allocator import keep_freed_pages
    from pipeline.updates import adam_passes

    keep_freed_pages()  # as in ours: the square roots' 1 MB comes back without page faults
    x, y = W.blobs64()
    X, Y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    torch.manual_seed(2020)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        for i in range(0, len(X), 16):
            loss = criterion(model(X[i : i + 16])[:, 0], Y[i : i + 16])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    params = [p.detach() for p in model.parameters()]
    own = [params, [p.grad for p in model.parameters()]]
    own += [[optimizer.state[p][k] for p in model.parameters()] for k in ("exp_avg", "exp_avg_sq")]
    generator = torch.Generator().manual_seed(0)
    # parameters, gradients, exp_avg, exp_avg_sq (not negative): far from float32's smallest normal
    drawn = [
        [torch.randn(t.shape, generator=generator).mul_(scale) for t in group]
        for group, scale in zip(own, (0.1, 1e-2, 1e-3, 1e-4), strict=True)
    ]
    drawn[3] = [t.abs_() for t in drawn[3]]
    tiny = torch.finfo(torch.float32).tiny

    def timed(groups: list[list[torch.Tensor]]) -> float:
        best = float("inf")
        for _ in range(repeats):
            p, g, m, v = ([t.clone() for t in group] for group in groups)
            started = time.perf_counter()
            for _ in range(20):  # the pipeline's own update (pipeline.updates), at step 100
                adam_passes(p, g, (m, v), 1e-3, (0.9, 0.999), 1e-8, 100.0)
            best = min(best, (time.perf_counter() - started) / 20)
        return best

    exp_avg = torch.cat([t.flatten() for t in own[2]])
    subnormal = float(((exp_avg != 0) & (exp_avg.abs() < tiny)).double().mean())
    real, normal = timed(own), timed(drawn)
    print(f"\n== S1, Adam's passes after {epochs} epochs of the tutorial loop (280k numbers)")
    print(f"  on S1's own ({subnormal:.1%} of exp_avg subnormal): {real * 1e6:7.0f} us an update")
    print(f"  on random numbers, none near underflow: {normal * 1e6:7.0f} us  (x{real / normal:.2f})")
    squares = torch.cat([t.flatten() for t in own[3]])
    exact = torch.from_numpy(np.sqrt(squares.double().numpy()).astype(np.float32))
    wrong = int((squares.sqrt() != exact).sum())
    print(f"  torch.sqrt(exp_avg_sq) off the correctly rounded root in {wrong:,} of {len(squares):,}")
    return {"subnormal": subnormal, "own_s": real, "normal_s": normal, "sqrt_off": wrong, "n": len(squares)}


def ours_fit(name: str, epochs: int, **train: Any) -> Callable[[], float]:
    """Our fit loop (Trainer.fit, no callbacks, no tracking) on a workload's data, as
    stages.train sets it up; `train` overrides the workload's train section."""
    import torch

    from pipeline.config import default_loss, params_from_dict
    from pipeline.data import make_dataset
    from pipeline.model import build_model, head_size
    from pipeline.split import split_dataset
    from pipeline.training import Trainer, seed_everything, to_tensors

    raw = W.ours_params(W.by_name(name, False), tracking=False, size=epochs)
    params = params_from_dict({**raw, "train": {**raw["train"], **train}})
    train = split_dataset(make_dataset(params.data), params.split)["train"]
    loss = default_loss(train.task) if params.train.loss == "auto" else params.train.loss
    cpu = torch.device("cpu")
    tensors = to_tensors(train.features, train.targets, loss, cpu)

    def run() -> float:
        seed_everything(params.train.seed, cpu)
        model = build_model(params.model, tensors.x.shape[1], head_size(loss, max(train.n_classes, 1)))
        state = Trainer(model, params.train, loss, cpu).fit(tensors, None)
        return state.history[-1]["train_loss"]

    return run


LEVERS = ("s1_adam", "s1_metrics", "s0_small_fit", "s1_fit", "s1_adam_state")


def main() -> None:
    parser = Parser(prog="python -m benchmarks.levers", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=positive, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=positive, default=5)
    parser.add_argument("--only", default=",".join(LEVERS[:3]), help=f"any of {', '.join(LEVERS)}")
    args = parser.parse_args()
    unknown = set(args.only.split(",")) - set(LEVERS)
    if unknown:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}; expected any of {', '.join(LEVERS)}")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats}")
    only = set(args.only.split(","))
    if "s1_adam" in only:
        results = best_of(
            {
                "Adam() (per-tensor loop on CPU)": s1_loop(2, {}),
                "Adam(foreach=True)": s1_loop(2, {"foreach": True}),
                "Adam(fused=True)": s1_loop(2, {"fused": True}),
            },
            args.repeats,
        )
        report("S1, 2 epochs: Adam's implementations", results)
    if "s1_metrics" in only:
        results = best_of(
            {"loss.item() per batch": s1_loop(2, {}), "Metrics.add per batch": s1_loop(2, {}, metrics=True)},
            args.repeats,
        )
        report("S1, 2 epochs: per-batch bookkeeping (the same mean loss, computed two ways)", results)
    if "s0_small_fit" in only:
        x, y = W.blobs4_split()
        results = best_of(
            {
                "tutorial loop": lambda: W.baseline_s0(x, y, 10, 2000)["final_loss"],
                "ours, Trainer.fit only": ours_fit("s0_small", 2000),
                "ours, Trainer.fit, autograd": ours_fit("s0_small", 2000, backward="autograd"),
            },
            args.repeats,
        )
        report("S0 small, 2000 epochs: the fit loop alone (no tracking, no checkpoints)", results)
    if "s1_fit" in only:
        results = best_of(
            {
                "tutorial loop": s1_loop(3, {}),
                "ours, Trainer.fit only": ours_fit("s1", 3),
                "ours, Trainer.fit, autograd": ours_fit("s1", 3, backward="autograd"),
                "ours, Trainer.fit, fused Adam": ours_fit("s1", 3, fused=True),
            },
            args.repeats,
        )
        report("S1, 3 epochs: the fit loop alone (no tracking, no checkpoints)", results)
    if "s1_adam_state" in only:
        s1_adam_state(10, args.repeats)


if __name__ == "__main__":
    main()
