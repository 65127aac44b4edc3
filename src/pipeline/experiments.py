"""Named experiments: conf/config.yaml plus one file of conf/experiment/, composed by Hydra.

This is the composition DVC performs for `dvc exp run -S experiment=NAME` when Hydra is enabled
in .dvc/config, so `pipeline compose NAME` writes the very params.yaml DVC would, and
`pipeline run --experiment NAME` (MLproject's `-P experiment=NAME`) trains the same params.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, PipelineError
from pipeline.files import write_text

CONF_DIR = "conf"
GROUP = "experiment"


def experiment_dir(root: Path) -> Path:
    return root / CONF_DIR / GROUP


def names(root: Path) -> list[str]:
    return sorted(p.stem for p in experiment_dir(root).glob("*.yaml"))


def describe(root: Path) -> list[tuple[str, str]]:
    """(name, description): the description is the file's first comment after the package line."""
    described = []
    for name in names(root):
        lines = (experiment_dir(root) / f"{name}.yaml").read_text().splitlines()
        comments = [ln.lstrip("# ").strip() for ln in lines if ln.startswith("#") and "@package" not in ln]
        described.append((name, comments[0] if comments else ""))
    return described


def compose(root: Path, name: str | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """The params dict DVC's Hydra composition gives for `-S experiment=NAME -S OVERRIDE...`."""
    conf = (root / CONF_DIR).resolve()
    if not (conf / "config.yaml").is_file():
        raise PipelineError(f"{conf / 'config.yaml'} is missing: named experiments need conf/")
    if name is not None and name not in names(root):
        raise ConfigError("experiment", name, f"one of {', '.join(names(root))} (see `pipeline experiments`)")
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    hydra_overrides = ([f"{GROUP}={name}"] if name else []) + list(overrides or [])
    try:
        with initialize_config_dir(str(conf), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=hydra_overrides)
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        raise PipelineError(f"cannot compose {conf}: {str(exc).splitlines()[0]}") from None
    return OmegaConf.to_container(cfg)  # type: ignore[return-value]


def dump(output: Path, params: dict[str, Any]) -> None:
    """Write params as `dvc exp run` does after composing (OmegaConf's YAML), atomically."""
    from omegaconf import OmegaConf

    write_text(output, OmegaConf.to_yaml(OmegaConf.create(params)))
