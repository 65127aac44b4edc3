"""Run named experiments and collect the figures docs/reproduction.md reports.

    python docs/reproduce.py [NAME ...] [--json docs/reproduction.json]

Each experiment runs as `pipeline run --experiment NAME` in a scratch copy of conf/, tracked into
that copy's own MLflow store, on this machine's default device. Without NAMEs it runs every
experiment whose data is available offline (MNIST / FashionMNIST need their files under
data/torchvision).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(name: str, scratch: Path) -> dict:
    work = scratch / name
    work.mkdir(parents=True)
    shutil.copytree(ROOT / "conf", work / "conf")
    torchvision = ROOT / "data" / "torchvision"
    if torchvision.is_dir():
        (work / "data").mkdir()
        (work / "data" / "torchvision").symlink_to(torchvision)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--experiment", name, "--set", "train.progress=off"],
        cwd=work,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        return {"name": name, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    history = json.loads((work / "models" / "history.json").read_text())
    metrics = json.loads((work / "metrics" / "eval.json").read_text())
    metrics.pop("per_class", None)
    row = {
        "name": name,
        "seconds_total": round(seconds, 2),
        "epochs": history["epochs"],
        "steps": history["steps"],
        "first_train_loss": history["history"][0]["train_loss"],
        "last_train_loss": history["history"][-1]["train_loss"],
        "test": metrics,
        "test_history": history.get("test_history", []),
    }
    import torch

    record = torch.load(work / "models" / "model.pt", weights_only=True)
    weights = record["state_dict"]
    if len(weights) == 2 and all(v.numel() == 1 for v in weights.values()):  # y = w x + b
        row["weight"], row["bias"] = (float(v) for v in weights.values())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from pipeline.experiments import compose, names

    chosen = args.names or [
        n
        for n in names(ROOT)
        if compose(ROOT, n)["data"]["source"] not in ("mnist", "fashion_mnist")
        or (ROOT / "data" / "torchvision").is_dir()
    ]
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in chosen:
            row = run(name, Path(scratch))
            print(json.dumps(row), flush=True)
            rows.append(row)
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "rows": rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
