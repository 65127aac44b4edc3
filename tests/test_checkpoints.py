"""Checkpoints and models/model.pt, through the stages and directly; exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_params

from pipeline import __version__, checkpoints, history, stages
from pipeline.checkpoints import (
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from pipeline.config import params_from_dict
from pipeline.errors import PipelineError
from pipeline.files import read_json
from pipeline.model import build_model
from pipeline.stages import Layout


def params(**sections):
    return params_from_dict(tiny_params(**sections))


def prepare(layout: Layout, **sections) -> None:
    p = params(**sections)
    stages.data(p, layout)
    stages.split(p, layout)


def train(layout: Layout, **sections) -> dict:
    stages.train(params(**sections), layout)
    return read_json(layout.history)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def names(layout: Layout) -> list[str]:
    return [p.name for p in list_checkpoints(layout.checkpoints)]


# -- what is written ------------------------------------------------------------------------------
def test_checkpoints_every_n_epochs_and_at_the_end(layout):
    prepare(layout)
    train(layout, train={"epochs": 5, "checkpoint_every": 2})
    assert names(layout) == ["epoch_000002.pt", "epoch_000004.pt", "epoch_000005.pt"]


def test_checkpoint_every_zero_saves_only_the_end(layout):
    prepare(layout)
    train(layout, train={"epochs": 3, "checkpoint_every": 0})
    assert names(layout) == ["epoch_000003.pt"]


def test_checkpoint_on_the_last_epoch_is_not_written_twice(layout):
    prepare(layout)
    train(layout, train={"epochs": 4, "checkpoint_every": 2})
    assert names(layout) == ["epoch_000002.pt", "epoch_000004.pt"]


def test_checkpoint_contents(layout):
    prepare(layout)
    p = params(train={"epochs": 3, "checkpoint_every": 1})
    stages.train(p, layout)
    meta = read_json(layout.split_dir / "meta.json")
    paths = list_checkpoints(layout.checkpoints)
    assert [path.name for path in paths] == [f"epoch_{e:06d}.pt" for e in (1, 2, 3)]
    for epoch, path in enumerate(paths, start=1):
        saved = load_checkpoint(path)
        assert saved["epoch"] == epoch
        assert saved["package_version"] == __version__
        assert saved["description"]["config"] == p.to_dict()
        assert saved["description"]["data_fingerprint"] == meta["fingerprint"]
        assert saved["description"]["loss"] == "cross_entropy"
        trainer = saved["trainer"]
        assert trainer["state"]["epoch"] == epoch
        assert trainer["state"]["step"] == 4 * epoch  # 120 train rows, batches of 32
        assert len(history.unpacked(trainer["state"]["history"])) == epoch
        assert trainer["optimizer"]["state"]  # Adam moments after the first step
        assert trainer["optimizer"]["param_groups"][0]["lr"] == p.train.lr
        assert isinstance(trainer["generator"], torch.Tensor) and trainer["generator"].dtype == torch.uint8
        assert isinstance(trainer["torch_rng"], torch.Tensor) and trainer["torch_rng"].dtype == torch.uint8
    # the RNG moved between epochs (shuffled batches), so the saved states differ
    first, last = load_checkpoint(paths[0]), load_checkpoint(paths[-1])
    assert not torch.equal(first["trainer"]["generator"], last["trainer"]["generator"])
    # and the last checkpoint holds the final weights
    assert_same_weights(last["trainer"]["model"], weights(layout.model))


def test_model_file_contents(layout):
    prepare(layout)
    p = params(train={"epochs": 2})
    stages.train(p, layout)
    record = torch.load(layout.model, map_location="cpu", weights_only=True)
    assert record["format"] == checkpoints.MODEL_FORMAT
    assert record["package_version"] == __version__
    assert record["epoch"] == 2
    assert record["config"] == p.to_dict()
    assert (record["n_inputs"], record["n_outputs"], record["task"]) == (2, 3, "multiclass")
    assert record["class_names"] == ["0", "1", "2"]


def test_the_same_training_writes_the_same_bytes(layout):
    """DVC hashes models/model.pt and the checkpoints: training again with the same params
    and data must give files with the same bytes (no temporary name inside them), or every
    `dvc repro` would record a new model."""
    prepare(layout)
    p = params(train={"epochs": 2})
    stages.train(p, layout)
    first = {path.name: path.read_bytes() for path in (layout.model, *layout.checkpoints.glob("*.pt"))}
    stages.train(p, layout)
    again = {path.name: path.read_bytes() for path in (layout.model, *layout.checkpoints.glob("*.pt"))}
    assert len(first) == 3 and first == again


def test_load_model_from_model_file_and_checkpoint(layout):
    prepare(layout)
    stages.train(params(model={"hidden": [6, 5], "batch_norm": True}, train={"epochs": 3}), layout)
    model, record = load_model(layout.model)
    assert not model.training
    assert record["epoch"] == 3
    assert_same_weights(model.state_dict(), weights(layout.model))
    assert [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)] == [6, 5, 3]

    from_ckpt, ckpt_record = load_model(checkpoint_path(layout.checkpoints, 2))
    assert ckpt_record["epoch"] == 2
    saved = load_checkpoint(checkpoint_path(layout.checkpoints, 2))
    assert_same_weights(from_ckpt.state_dict(), saved["trainer"]["model"])
    assert not from_ckpt.training

    x = torch.randn(4, 2)
    with torch.no_grad():
        assert model(x).shape == (4, 3)
        assert not torch.equal(model(x), from_ckpt(x))  # epoch 2 is not epoch 3


def test_load_model_rebuilds_from_a_direct_checkpoint(tmp_path):
    p = params(model={"hidden": [4]})
    torch.manual_seed(0)
    model = build_model(p.model, 3, 2)
    description = {
        "config": p.to_dict(),
        "n_inputs": 3,
        "n_outputs": 2,
        "scale": 1.0,
        "loss": "cross_entropy",
    }
    path = save_checkpoint(tmp_path, 7, {"model": model.state_dict()}, description)
    assert path == tmp_path / "epoch_000007.pt"
    rebuilt, record = load_model(path)
    assert record["epoch"] == 7
    assert_same_weights(rebuilt.state_dict(), model.state_dict())


def test_list_checkpoints_sorts_by_epoch_and_ignores_others(tmp_path):
    for name in (
        "epoch_000010.pt",
        "epoch_000002.pt",
        "epoch_000001.pt",
        "notes.txt",
        "epoch_3.pt",
        "epoch_x.pt",
    ):
        (tmp_path / name).write_text("")
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "epoch_000001.pt",
        "epoch_000002.pt",
        "epoch_3.pt",
        "epoch_000010.pt",
    ]
    assert list_checkpoints(tmp_path / "missing") == []


# -- resume ---------------------------------------------------------------------------------------
def run_straight_and_resumed(root: Path, **sections) -> tuple[Layout, Layout]:
    straight, resumed = Layout(root / "straight"), Layout(root / "resumed")
    for layout in (straight, resumed):
        prepare(layout, **sections)
    base = sections.pop("train", {})
    train(straight, train={**base, "epochs": 6}, **sections)
    train(resumed, train={**base, "epochs": 3}, **sections)
    assert names(resumed)[-1] == "epoch_000003.pt"
    train(resumed, train={**base, "epochs": 6, "resume": True}, **sections)
    return straight, resumed


def assert_same_run(straight: Layout, resumed: Layout) -> None:
    a, b = read_json(straight.history), read_json(resumed.history)
    assert b["resumed_from"] == 3
    assert a["resumed_from"] is None
    assert len(a["history"]) == 6
    assert a["history"] == b["history"]
    assert (a["epochs"], a["steps"], a["stop_reason"]) == (b["epochs"], b["steps"], b["stop_reason"])
    assert_same_weights(weights(straight.model), weights(resumed.model))


def test_resume_is_exact(workdir):
    straight, resumed = run_straight_and_resumed(workdir, train={"batch_size": "full", "shuffle": False})
    assert_same_run(straight, resumed)


def test_resume_is_exact_with_dropout_and_shuffled_batches(workdir):
    straight, resumed = run_straight_and_resumed(
        workdir,
        model={"hidden": [16, 8], "dropout": 0.3},
        train={"batch_size": 16, "shuffle": True, "optimizer": "adam", "scheduler": "step", "step_size": 2},
    )
    assert_same_run(straight, resumed)


def test_resume_after_a_killed_run_is_exact(workdir, monkeypatch):
    """Killed after epoch 3 of 6, then run again with the same params and resume on."""
    sections = {
        "model": {"hidden": [16], "dropout": 0.2},
        "train": {"epochs": 6, "batch_size": 16, "scheduler": "cosine", "restore_best": False},
    }
    straight, killed = Layout(workdir / "straight"), Layout(workdir / "killed")
    for layout in (straight, killed):
        prepare(layout, **sections)
    train(straight, **sections)

    from pipeline.callbacks import Checkpointer

    save = Checkpointer.on_epoch_end

    def save_then_die(self, trainer, metrics):
        save(self, trainer, metrics)
        if trainer.state.epoch == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpointer, "on_epoch_end", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(killed, **sections)
    monkeypatch.undo()
    assert names(killed) == [f"epoch_{e:06d}.pt" for e in (1, 2, 3)]
    train(killed, model=sections["model"], train={**sections["train"], "resume": True})
    assert_same_run(straight, killed)


def test_resume_is_exact_with_restore_best(workdir):
    """The last checkpoint must hold the last epoch's weights, not the best ones restored at the end."""
    base = {"optimizer": "sgd", "lr": 2.0, "batch_size": "full", "restore_best": True}
    straight, resumed = Layout(workdir / "straight"), Layout(workdir / "resumed")
    for layout in (straight, resumed):
        prepare(layout)
    train(straight, train={**base, "epochs": 6, "checkpoint_every": 1})
    first = train(resumed, train={**base, "epochs": 2, "checkpoint_every": 0})
    assert first["best_epoch"] == 1  # so restoring the best changes the weights at the end
    after_two = load_checkpoint(checkpoint_path(straight.checkpoints, 2))["trainer"]["model"]
    assert_same_weights(
        load_checkpoint(checkpoint_path(resumed.checkpoints, 2))["trainer"]["model"], after_two
    )
    train(resumed, train={**base, "epochs": 6, "checkpoint_every": 0, "resume": True})
    a, b = read_json(straight.history), read_json(resumed.history)
    assert a["history"] == b["history"]
    assert a["best_epoch"] == b["best_epoch"]
    assert_same_weights(weights(straight.model), weights(resumed.model))


def test_resume_after_max_steps_continues_when_the_limit_is_lifted(workdir):
    straight, limited = Layout(workdir / "straight"), Layout(workdir / "limited")
    for layout in (straight, limited):
        prepare(layout)
    train(straight, train={"epochs": 6})
    first = train(limited, train={"epochs": 6, "max_steps": 8})  # 4 steps an epoch: stops after epoch 2
    assert (first["epochs"], first["steps"], first["stop_reason"]) == (2, 8, "max_steps")
    train(limited, train={"epochs": 6, "resume": True})
    b = read_json(limited.history)
    assert b["resumed_from"] == 2
    assert (b["epochs"], b["steps"], b["stop_reason"]) == (6, 24, "epochs")
    assert b["history"] == read_json(straight.history)["history"]
    assert_same_weights(weights(straight.model), weights(limited.model))


def test_resume_refuses_a_different_model(layout):
    prepare(layout)
    train(layout, model={"hidden": [8]}, train={"epochs": 2})
    with pytest.raises(PipelineError) as caught:
        train(layout, model={"hidden": [4]}, train={"epochs": 4, "resume": True})
    message = str(caught.value)
    assert "model differs" in message
    assert "'hidden': [8]" in message and "'hidden': [4]" in message
    assert "epoch_000002.pt" in message
    assert "\n" not in message
    # nothing was thrown away
    assert names(layout) == ["epoch_000001.pt", "epoch_000002.pt"]


def test_resume_refuses_different_data(workdir):
    layout = Layout(workdir)
    prepare(layout)
    train(layout, train={"epochs": 2})
    prepare(layout, data={"n_samples": 240})
    with pytest.raises(PipelineError, match="different data"):
        train(layout, data={"n_samples": 240}, train={"epochs": 4, "resume": True})


def test_resume_refuses_a_different_optimizer(layout):
    prepare(layout)
    train(layout, train={"epochs": 2, "optimizer": "adam"})
    with pytest.raises(PipelineError, match=r"train\.optimizer differs.*adam.*sgd"):
        train(layout, train={"epochs": 4, "optimizer": "sgd", "resume": True})


def test_resume_without_checkpoints_starts_fresh(workdir):
    fresh, resumed = Layout(workdir / "fresh"), Layout(workdir / "resumed")
    for layout in (fresh, resumed):
        prepare(layout)
    a = train(fresh, train={"epochs": 3})
    b = train(resumed, train={"epochs": 3, "resume": True})
    assert b["resumed_from"] is None
    assert [row["epoch"] for row in b["history"]] == [1, 2, 3]
    assert a["history"] == b["history"]
    assert_same_weights(weights(fresh.model), weights(resumed.model))


def test_resume_when_already_done_trains_no_more(layout):
    prepare(layout)
    first = train(layout, train={"epochs": 3})
    again = train(layout, train={"epochs": 3, "resume": True})
    assert again["resumed_from"] == 3
    assert again["history"] == first["history"]


def test_fresh_run_clears_old_checkpoints(layout):
    prepare(layout)
    train(layout, train={"epochs": 5, "checkpoint_every": 1})
    assert len(names(layout)) == 5
    stale = layout.checkpoints / ".epoch_000006.pt.abc123.tmp"
    stale.write_bytes(b"half written")
    history = train(layout, train={"epochs": 2, "checkpoint_every": 1})
    assert names(layout) == ["epoch_000001.pt", "epoch_000002.pt"]
    assert not stale.exists()
    assert history["resumed_from"] is None
    assert (
        load_checkpoint(checkpoint_path(layout.checkpoints, 2))["description"]["config"]["train"]["epochs"]
        == 2
    )


# -- unreadable files -----------------------------------------------------------------------------
def one_line_error(path: Path, loader=load_model) -> str:
    with pytest.raises(PipelineError) as caught:
        loader(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_load_model_on_garbage_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x00\x01 this is not a torch file \xff" * 10)
    assert "not a readable" in one_line_error(path)


def test_load_model_on_a_foreign_torch_file(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    assert "not a model or checkpoint written by ffn-pipeline" in one_line_error(path)
    torch.save([1, 2, 3], path)
    one_line_error(path)


def test_load_model_on_missing_file(tmp_path):
    assert "missing" in one_line_error(tmp_path / "nowhere.pt")


def test_load_checkpoint_refuses_a_model_file(layout):
    prepare(layout)
    train(layout, train={"epochs": 1})
    assert "not a checkpoint" in one_line_error(layout.model, load_checkpoint)


def test_resume_from_a_corrupt_checkpoint_is_one_line(layout):
    prepare(layout)
    train(layout, train={"epochs": 2})
    checkpoint_path(layout.checkpoints, 2).write_bytes(b"torn")
    with pytest.raises(PipelineError) as caught:
        train(layout, train={"epochs": 4, "resume": True})
    assert "\n" not in str(caught.value)
    assert "epoch_000002.pt" in str(caught.value)
