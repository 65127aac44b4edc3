"""The in-memory dataset every source produces and the `.npz` file the stages exchange."""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.files import write_bytes


@dataclass
class Dataset:
    """Features (n, d) and targets (n,), with what a model and a report need to know of them.

    Images stay uint8 and carry `scale` (255 for pixels): a model divides by it per batch.
    `is_test` marks a dataset's own test rows (torchvision), used by `split.method: predefined`.
    """

    features: np.ndarray
    targets: np.ndarray
    task: str
    feature_names: list[str]
    class_names: list[str] = field(default_factory=list)
    source: str = ""
    scale: float = 1.0
    image_shape: list[int] | None = None
    is_test: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.targets.ndim != 1:
            raise PipelineError(
                f"dataset {self.source}: features must be 2-D and targets 1-D, "
                f"got {self.features.shape} and {self.targets.shape}"
            )
        if len(self.features) != len(self.targets):
            raise PipelineError(
                f"dataset {self.source}: {len(self.features)} feature rows, {len(self.targets)} targets"
            )

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def meta(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "feature_names": self.feature_names,
            "class_names": self.class_names,
            "source": self.source,
            "scale": self.scale,
            "image_shape": self.image_shape,
        }

    def subset(self, index: np.ndarray) -> Dataset:
        return Dataset(
            features=self.features[index],
            targets=self.targets[index],
            task=self.task,
            feature_names=self.feature_names,
            class_names=self.class_names,
            source=self.source,
            scale=self.scale,
            image_shape=self.image_shape,
        )


def save_dataset(path: str | Path, dataset: Dataset) -> None:
    arrays: dict[str, np.ndarray] = {
        "features": dataset.features,
        "targets": dataset.targets,
        "meta": np.array(json.dumps(dataset.meta())),
    }
    if dataset.is_test is not None:
        arrays["is_test"] = dataset.is_test
    write_bytes(path, lambda handle: _write_npz(handle, arrays))


def _write_npz(handle: Any, arrays: dict[str, np.ndarray]) -> None:
    """What `np.savez` writes (a stored `.npy` member per array), in headers that are the same
    bytes on every Python: `np.savez` forces zip64 headers, which Python 3.11.4 changed, so the
    same data hashed differently to DVC; here zip64 only for a member over 2 GiB, as zip needs."""
    with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
        for key, array in arrays.items():
            member = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.file_size = array.nbytes + 65536  # a bound on the .npy: zipfile picks zip64 by it
            with archive.open(member, "w") as out:
                np.lib.format.write_array(out, np.asanyarray(array), allow_pickle=False)


def load_dataset(path: str | Path) -> Dataset:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} is missing: run the stage that writes it first")
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            is_test = npz["is_test"] if "is_test" in npz.files else None
            return Dataset(features=npz["features"], targets=npz["targets"], is_test=is_test, **meta)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise PipelineError(f"{path} is not a dataset file written by this pipeline ({exc})") from None


def fingerprint(*datasets: Dataset) -> str:
    """sha256 over features, targets and metadata: equal data gives an equal fingerprint."""
    digest = hashlib.sha256()
    for ds in datasets:
        for array in (ds.features, ds.targets):
            digest.update(str((array.dtype.str, array.shape)).encode())
            digest.update(np.ascontiguousarray(array).data)
        digest.update(json.dumps(ds.meta(), sort_keys=True).encode())
    return digest.hexdigest()
