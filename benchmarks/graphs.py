"""`python -m benchmarks.graphs --device cuda`: what replaying full-batch epochs as CUDA graphs
(`train.cuda_graphs`, pipeline/epoch_graph.py) buys, and that it changes no number.

For S0 small, S0 wide and S0 wide with Adam (`capturable` then), the fit loop alone (no
tracking, no files) trains with `train.cuda_graphs: auto` and `false`, alternated `--rounds`
times after one untimed warm-up fit of each; it prints the median fit seconds of each, their
ratio, whether the epochs were replayed, and whether both fits ended with the same history and
weights (bit for bit for SGD; Adam's `capturable` update rounds otherwise than the eager one).
On the CPU nothing is replayed: both sides are the eager loop (the script's own check).
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from benchmarks import workloads as W
from benchmarks.command_line import Parser, rows_path, write_rows

CASES = {  # case -> (workload, overrides)
    "s0_small": ("s0_small", {}),
    "s0_wide": ("s0_wide", {}),
    "s0_wide_adam": ("s0_wide", {"optimizer": "adam", "lr": 0.01}),
}


def fit_once(raw: dict[str, Any], graphs: Any) -> dict[str, Any]:
    """One fit of `raw` with `train.cuda_graphs: graphs`: seconds, history, weights, graph use."""
    import torch

    from pipeline.config import default_loss, params_from_dict
    from pipeline.data import make_dataset
    from pipeline.model import build_model, head_size
    from pipeline.split import split_dataset
    from pipeline.training import Trainer, resolve_device, seed_everything, to_tensors

    raw = {**raw, "train": {**raw["train"], "cuda_graphs": graphs}}
    params = params_from_dict(raw)
    device = resolve_device(params.train.device)
    parts = split_dataset(make_dataset(params.data), params.split)
    train = parts["train"]
    loss = default_loss(train.task) if params.train.loss == "auto" else params.train.loss
    seed_everything(params.train.seed, device)
    model = build_model(params.model, train.features.shape[1], head_size(loss, max(train.n_classes, 1)))
    tensors = {
        name: to_tensors(part.features, part.targets, loss, device)
        for name, part in parts.items()
        if name != "test" and len(part.targets)
    }
    trainer = Trainer(model, params.train, loss, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    started = time.perf_counter()
    state = trainer.fit(tensors["train"], tensors.get("val"))
    sync()
    seconds = time.perf_counter() - started
    graph = trainer.graph
    return {
        "seconds": seconds,
        "history": state.history,
        "weights": {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()},
        "replayed": graph is not None and graph.replay is not None,
        "failure": graph.failure if graph is not None else trainer.graph_unsupported(1) or "not replayed",
    }


def measure(case: str, device: str, epochs: int | None, rounds: int) -> dict[str, Any]:
    name, overrides = CASES[case]
    workload = W.by_name(name, quick=False)
    raw = W.ours_params(workload, tracking=False, device=device, size=epochs)
    raw["train"].update(overrides, checkpoint_every=0)
    fit_once(raw, "auto"), fit_once(raw, False)  # warm-ups: CUDA context, cuBLAS, allocator
    times: dict[str, list[float]] = {"auto": [], "false": []}
    last: dict[str, dict[str, Any]] = {}
    for _ in range(rounds):
        for side, graphs in (("auto", "auto"), ("false", False)):
            last[side] = fit_once(raw, graphs)
            times[side].append(last[side]["seconds"])
    a, b = last["auto"], last["false"]
    gap = max((a["weights"][k] - b["weights"][k]).abs().max().item() for k in a["weights"])
    graphs_s, eager_s = statistics.median(times["auto"]), statistics.median(times["false"])
    return {
        "case": case,
        "device": device,
        "epochs": raw["train"]["epochs"],
        "graphs_s": graphs_s,
        "eager_s": eager_s,
        "ratio": graphs_s / eager_s,
        "replayed": a["replayed"],
        "failure": a["failure"],
        "same_history": a["history"] == b["history"],
        "max_weight_gap": gap,
        "rounds": {"auto": times["auto"], "false": times["false"]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m benchmarks.graphs", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per fit (default: the workload's)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated fits of each side (default 3)")
    parser.add_argument("--only", default=",".join(CASES), help=f"comma-separated cases: {', '.join(CASES)}")
    parser.add_argument("--json", type=rows_path, default=None, help="write the rows here")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown or args.rounds < 1 or (args.epochs is not None and args.epochs < 1):
        what = f"--only {','.join(unknown)}" if unknown else "--rounds/--epochs"
        print(f"{what}: expected cases from {', '.join(CASES)} and counts >= 1", file=sys.stderr)
        return 2
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(f"--device {args.device}: no CUDA device here; try --device cpu", file=sys.stderr)
            return 2
    rows = []
    for case in cases:
        row = measure(case, args.device, args.epochs, args.rounds)
        rows.append(row)
        replayed = "replayed" if row["replayed"] else f"eager ({row['failure']})"
        print(
            f"{case:<14} {row['epochs']:>5} ep  graphs {row['graphs_s']:.3f} s  eager {row['eager_s']:.3f} s"
            f"  ratio {row['ratio']:.3f}  {replayed}  same history {row['same_history']}"
            f"  max weight gap {row['max_weight_gap']:.3g}"
        )
    if args.json:
        write_rows(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
