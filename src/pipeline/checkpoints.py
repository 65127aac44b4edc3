"""Checkpoints and the final model file: weights plus what they need to describe themselves."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline import __version__
from pipeline.config import ModelConfig
from pipeline.errors import PipelineError
from pipeline.files import remove_stale_temporaries, write_bytes
from pipeline.model import build_model

CHECKPOINT_NAME = re.compile(r"^epoch_(\d+)\.pt$")
MODEL_FORMAT = "ffn-pipeline/model/1"
CHECKPOINT_FORMAT = "ffn-pipeline/checkpoint/1"


def _save(path: Path, obj: dict[str, Any]) -> None:
    """Written through a file object: torch names the zip's inner folder after a path it is
    given (here a random temporary name), which made every save of the same weights a new file
    to DVC; through a handle the folder is always `archive`, so equal contents are equal bytes."""
    write_bytes(path, lambda handle: torch.save(obj, handle))


def _load(path: Path, kind: str) -> dict[str, Any]:
    """Read a file this package wrote; `kind` "" accepts a model or a checkpoint."""
    what = kind or "model or checkpoint"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PipelineError(f"{path} is missing: run `pipeline train` first") from None
    except Exception as exc:  # torch raises many kinds for a torn or foreign file
        raise PipelineError(f"{path} is not a readable {what} ({type(exc).__name__})") from None
    if not isinstance(obj, dict) or not str(obj.get("format", "")).startswith(f"ffn-pipeline/{kind}"):
        raise PipelineError(f"{path} is not a {what} written by ffn-pipeline")
    return obj


# -- the model -----------------------------------------------------------------------------------
def model_record(
    model: nn.Module, *, description: dict[str, Any], epoch: int, step: int = 0
) -> dict[str, Any]:
    """What models/model.pt holds: weights, how to rebuild them, and where they came from."""
    return {
        "format": MODEL_FORMAT,
        "package_version": __version__,
        "epoch": epoch,
        "step": step,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **description,
    }


def save_model(path: str | Path, record: dict[str, Any]) -> None:
    _save(Path(path), record)


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network from models/model.pt (or any checkpoint); returns (model, record)."""
    record = _load(Path(path), "")
    if record["format"] == CHECKPOINT_FORMAT:
        record = {**record["description"], "state_dict": record["trainer"]["model"], "epoch": record["epoch"]}
    model = build_model(
        ModelConfig.model_validate(record["config"]["model"]),
        record["n_inputs"],
        record["n_outputs"],
        record["scale"],
    )
    model.load_state_dict(record["state_dict"])
    model.eval()
    return model, record


# -- checkpoints ---------------------------------------------------------------------------------
def checkpoint_path(folder: str | Path, epoch: int) -> Path:
    return Path(folder) / f"epoch_{epoch:06d}.pt"


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoints in `folder`, oldest epoch first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(
    folder: str | Path, epoch: int, trainer_state: dict[str, Any], description: dict[str, Any]
) -> Path:
    path = checkpoint_path(folder, epoch)
    _save(
        path,
        {
            "format": CHECKPOINT_FORMAT,
            "package_version": __version__,
            "epoch": epoch,
            "description": description,
            "trainer": trainer_state,
        },
    )
    return path


def clear_checkpoints(folder: str | Path) -> None:
    for path in list_checkpoints(folder):
        path.unlink()
    if Path(folder).is_dir():
        remove_stale_temporaries(folder)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    return _load(Path(path), "checkpoint")


def incompatibility(saved: dict[str, Any], description: dict[str, Any]) -> str | None:
    """Why a checkpoint cannot continue this run, or None when it can."""
    old = saved["description"]
    if old["data_fingerprint"] != description["data_fingerprint"]:
        return "it was trained on different data (data fingerprint differs)"
    if old["config"]["model"] != description["config"]["model"]:
        return (
            f"model differs: checkpoint has {old['config']['model']}, "
            f"params have {description['config']['model']}"
        )
    if old["config"]["train"]["optimizer"] != description["config"]["train"]["optimizer"]:
        return (
            f"train.optimizer differs: checkpoint has {old['config']['train']['optimizer']}, "
            f"params have {description['config']['train']['optimizer']}"
        )
    if old["loss"] != description["loss"]:
        return f"loss differs: checkpoint has {old['loss']}, params have {description['loss']}"
    return None


def newest_compatible(folder: str | Path, description: dict[str, Any]) -> dict[str, Any] | None:
    """The newest checkpoint in `folder`; None when there is none; refused when incompatible."""
    paths = list_checkpoints(folder)
    if not paths:
        return None
    saved = load_checkpoint(paths[-1])
    reason = incompatibility(saved, description)
    if reason:
        raise PipelineError(
            f"train.resume: cannot resume from {paths[-1]}: {reason}; set train.resume false to start afresh"
        )
    return saved
