"""Typed schema of params.yaml: one section per stage plus `tracking`.

Every section rejects unknown keys and wrong types; cross-section combinations that cannot work
(BCE on a regression target, a monitor on a missing validation split, ...) are checked by
`check_combinations`. Any problem raises `ConfigError` with one line naming key, value and what
is allowed, before a stage does any work.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.errors import ConfigError

Activation = Literal["relu", "tanh", "sigmoid", "gelu", "leaky_relu", "elu", "identity"]
Source = Literal["blobs", "moons", "circles", "linear", "digits", "mnist", "fashion_mnist", "csv"]
Task = Literal["multiclass", "binary", "regression"]
PositiveInt = Annotated[int, Field(ge=1)]

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
CLASSIFICATION_LOSSES = ("cross_entropy", "bce")
REGRESSION_LOSSES = ("mse", "l1", "huber")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataConfig(Section):
    source: Source = "blobs"
    # scikit-learn generators
    n_samples: int = Field(1000, ge=4, le=20_000_000)
    n_features: int = Field(2, ge=1, le=100_000)
    centers: int = Field(4, ge=2, le=10_000)
    cluster_std: float = Field(1.0, gt=0)
    noise: float = Field(0.0, ge=0)
    random_state: int = Field(0, ge=0, le=2**32 - 1)
    # linear: y = weight * x + bias over arange(start, end, step)
    weight: float = 0.7
    bias: float = 0.3
    start: float = 0.0
    end: float = 1.0
    step: float = Field(0.02, gt=0)
    # torchvision datasets
    root: str = "data/torchvision"
    download: bool = True
    # user CSV
    path: str | None = None
    target: str | None = None
    task: Literal["auto", "multiclass", "binary", "regression"] = "auto"


class SplitConfig(Section):
    train: float = Field(0.7, gt=0, lt=1)
    val: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.2, gt=0, lt=1)
    method: Literal["random", "ordered", "predefined"] = "random"
    stratify: bool = True
    seed: int = Field(0, ge=0, le=2**32 - 1)


class InitConfig(Section):
    scheme: Literal[
        "default",
        "xavier_uniform",
        "xavier_normal",
        "kaiming_uniform",
        "kaiming_normal",
        "lecun_normal",
        "normal",
        "uniform",
    ] = "default"
    std: float = Field(0.01, gt=0)
    low: float = -0.05
    high: float = 0.05
    bias: float | None = None
    bias_std: float | None = Field(None, gt=0)


class ModelConfig(Section):
    hidden: list[PositiveInt] = [16]
    activation: Activation = "relu"
    dropout: float = Field(0.0, ge=0, lt=1)
    batch_norm: bool = False
    init: InitConfig = InitConfig()


class TrainConfig(Section):
    optimizer: Literal["sgd", "adam", "adamw", "rmsprop"] = "adam"
    lr: float = Field(0.01, gt=0, le=100)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    betas: Annotated[list[float], Field(min_length=2, max_length=2)] = [0.9, 0.999]
    alpha: float = Field(0.99, gt=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    centered: bool = False
    loss: Literal["auto", "cross_entropy", "bce", "mse", "l1", "huber"] = "auto"
    huber_delta: float = Field(1.0, gt=0)
    epochs: int = Field(50, ge=1, le=10_000_000)
    max_steps: int | None = Field(None, ge=1)
    batch_size: PositiveInt | Literal["full"] = 32
    shuffle: bool = True
    test_every_steps: int = Field(0, ge=0)  # score the test split every N steps (0: only at the end)
    scheduler: Literal["none", "step", "cosine"] = "none"
    step_size: int = Field(10, ge=1)
    gamma: float = Field(0.1, gt=0, le=1)
    monitor: Literal["val_loss", "val_accuracy", "val_rmse", "val_mae", "train_loss"] = "val_loss"
    early_stopping_patience: int | None = Field(None, ge=1)
    restore_best: bool = False
    checkpoint_every: int = Field(10, ge=0)
    resume: bool = False
    device: str = "auto"
    seed: int = Field(0, ge=0, le=2**63 - 1)
    progress: Literal["auto", "on", "off"] = "auto"
    threads: PositiveInt | Literal["auto"] = "auto"  # CPU threads; auto: 1 for tiny nets, else torch's
    # torch's fused optimizer kernels (sgd, adam, adamw): auto = on CUDA only; true = on the CPU
    # too, faster there but not bit-identical to the plain per-tensor loop (last bits differ)
    fused: bool | Literal["auto"] = "auto"
    # torch.compile the training forward pass (opt-in: compiling costs seconds up front and pays
    # on long runs and GPUs; its generated kernels round differently: not bit-identical to eager)
    compile: bool = False
    # gradients: `direct` runs torch's backward kernels layer by layer without recording a graph
    # (plain Linear/activation stacks; the same bits as autograd, less overhead per step);
    # auto = direct where the model allows it and the forward is not compiled
    backward: Literal["auto", "autograd", "direct"] = "auto"
    # full-batch epochs on CUDA replayed as one CUDA graph (pipeline.epoch_graph): auto = where
    # the loop allows it (no scheduler, dropout or compile); true = the same, refused elsewhere
    cuda_graphs: bool | Literal["auto"] = "auto"

    @field_validator("progress", mode="before")
    @classmethod
    def _bare_on_off(cls, value: Any) -> Any:
        """YAML 1.1 reads a bare on/off as a boolean, and `dvc exp run -S` writes them bare."""
        return ("on" if value else "off") if isinstance(value, bool) else value


CHAMPION_METRICS = {
    "classification": ("accuracy", "macro_f1", "log_loss"),
    "regression": ("mse", "rmse", "mae", "r2"),
}
LARGER_IS_BETTER = ("accuracy", "macro_f1", "r2")


class EvaluateConfig(Section):
    batch_size: PositiveInt = 8192
    plots: bool = True
    # the registered version whose test metric is best holds the `champion` alias
    champion_metric: Literal["auto", "accuracy", "macro_f1", "log_loss", "mse", "rmse", "mae", "r2"] = "auto"

    def champion(self, task: str) -> tuple[str, bool]:
        """(metric, larger is better) for this task; auto = accuracy or rmse."""
        kind = "regression" if task == "regression" else "classification"
        metric = self.champion_metric
        if metric == "auto":
            metric = "rmse" if kind == "regression" else "accuracy"
        return metric, metric in LARGER_IS_BETTER


MAX_CURVE_POINTS = 100  # enough to draw a curve; history.json and DVC plots keep every epoch


class TrackingConfig(Section):
    enabled: bool = True
    experiment: str = Field("ffn-pipeline", min_length=1)
    run_name: str | None = None
    log_model: bool = True
    register_model: bool = True  # each training run registers a model version under model_name
    model_name: str | None = None  # null: the same as `experiment`
    log_checkpoints: bool = True  # each checkpoint as a logged model at its step
    keep_checkpoints: int = Field(0, ge=0)  # logged checkpoint models kept, best by train.monitor; 0 = all
    # per-epoch metrics to MLflow every N epochs (and at checkpoints and the last epoch);
    # auto: every epoch up to 100 epochs, then about 100 points per curve. history.json has all.
    log_every_epochs: PositiveInt | Literal["auto"] = "auto"
    # MLflow in a process of its own beside each stage (Linux): its import and store opening run
    # while the stage imports torch, and metrics and checkpoint models are logged while training
    # goes on. auto: when the stage's process has not loaded MLflow itself (a `pipeline` command);
    # a long-lived process that has (tests, a notebook) already paid what it would save
    process: bool | Literal["auto"] = "auto"

    def metric_epochs_every(self, epochs: int) -> int:
        if self.log_every_epochs != "auto":
            return self.log_every_epochs
        return max(1, -(-epochs // MAX_CURVE_POINTS))

    @property
    def registered_name(self) -> str:
        return self.model_name or self.experiment


class Params(Section):
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    tracking: TrackingConfig = TrackingConfig()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def expected_task(data: DataConfig) -> tuple[Task | None, int | None]:
    """Task and number of classes known from the data section alone (None: only the file knows)."""
    if data.source == "blobs":
        return ("binary", 2) if data.centers == 2 else ("multiclass", data.centers)
    if data.source in ("moons", "circles"):
        return "binary", 2
    if data.source == "linear":
        return "regression", None
    if data.source in ("digits", "mnist", "fashion_mnist"):
        return "multiclass", 10
    return (None if data.task == "auto" else data.task), None


def default_loss(task: str) -> str:
    return {"multiclass": "cross_entropy", "binary": "bce", "regression": "mse"}[task]


def check_task(params: Params, task: str, n_classes: int | None, where: str = "train.loss") -> None:
    """Refuse losses and monitors that cannot work on this task."""
    t = params.train
    loss = default_loss(task) if t.loss == "auto" else t.loss
    if task == "regression" and loss in CLASSIFICATION_LOSSES:
        raise ConfigError(where, loss, f"one of {', '.join(REGRESSION_LOSSES)} for a regression target")
    if task != "regression" and loss in REGRESSION_LOSSES:
        raise ConfigError(where, loss, f"cross_entropy or bce for a {task} target")
    if loss == "bce" and task == "multiclass":
        raise ConfigError(
            where,
            loss,
            f"cross_entropy: a 1-unit sigmoid head cannot separate {n_classes or 'more than 2'} classes",
        )
    kind = "regression" if task == "regression" else "classification"
    metric = params.evaluate.champion_metric
    if metric != "auto" and metric not in CHAMPION_METRICS[kind]:
        allowed = ", ".join(("auto", *CHAMPION_METRICS[kind]))
        raise ConfigError("evaluate.champion_metric", metric, f"one of {allowed} for a {task} target")
    if task == "regression" and t.monitor == "val_accuracy":
        raise ConfigError("train.monitor", t.monitor, "val_loss, val_rmse, val_mae or train_loss")
    if task != "regression" and t.monitor in ("val_rmse", "val_mae"):
        raise ConfigError("train.monitor", t.monitor, "val_loss, val_accuracy or train_loss")


def check_combinations(params: Params) -> None:
    d, s, t, i = params.data, params.split, params.train, params.model.init
    total = s.train + s.val + s.test
    if abs(total - 1.0) > 1e-9:
        raise ConfigError("split", f"{s.train}+{s.val}+{s.test}={total:g}", "fractions summing to 1")
    if s.method == "predefined" and d.source not in ("mnist", "fashion_mnist"):
        raise ConfigError("split.method", s.method, "random or ordered for data.source " + d.source)
    if d.source == "linear":
        n = round((d.end - d.start) / d.step)
        if d.end <= d.start or n < 4:
            raise ConfigError("data.end", d.end, f"greater than data.start by at least 4 steps of {d.step}")
    if d.source == "csv":
        if not d.path:
            raise ConfigError("data.path", d.path, "the path of a CSV file when data.source is csv")
        if not d.target:
            raise ConfigError("data.target", d.target, "the name of the target column")
    if i.bias is not None and i.bias_std is not None:
        raise ConfigError("model.init.bias_std", i.bias_std, "null when model.init.bias is a constant")
    if i.scheme == "uniform" and i.low >= i.high:
        raise ConfigError("model.init.low", i.low, f"less than model.init.high ({i.high})")
    if t.nesterov and (t.optimizer != "sgd" or t.momentum == 0):
        raise ConfigError("train.nesterov", True, "only with train.optimizer sgd and train.momentum > 0")
    if t.momentum and t.optimizer in ("adam", "adamw"):
        raise ConfigError("train.momentum", t.momentum, f"0 with {t.optimizer} (use train.betas)")
    if s.val == 0 and t.monitor.startswith("val_") and (t.early_stopping_patience or t.restore_best):
        key = "train.early_stopping_patience" if t.early_stopping_patience else "train.restore_best"
        raise ConfigError(
            key,
            getattr(t, key.split(".")[1]),
            f"split.val > 0 to watch {t.monitor}, or train.monitor train_loss",
        )
    if t.fused is True and t.optimizer == "rmsprop":
        raise ConfigError("train.fused", True, "auto or false with rmsprop (torch has no fused RMSprop)")
    if t.backward == "direct":
        m = params.model
        if m.dropout or m.batch_norm or t.compile:
            what = "model.dropout" if m.dropout else "model.batch_norm" if m.batch_norm else "train.compile"
            raise ConfigError("train.backward", "direct", f"auto or autograd with {what} (it needs autograd)")
    if t.cuda_graphs is True:
        needs = (
            (t.batch_size != "full", "train.batch_size full"),
            (t.scheduler != "none", "train.scheduler none"),
            (bool(params.model.dropout), "model.dropout 0"),
            (t.compile, "train.compile false"),
            (t.device in ("cpu", "mps"), "a CUDA train.device"),
        )
        missing = next((what for broken, what in needs if broken), "")
        if missing:
            raise ConfigError("train.cuda_graphs", True, f"auto or false, or true with {missing}")
    if not DEVICE_PATTERN.match(t.device):
        raise ConfigError("train.device", t.device, "auto, cpu, cuda, cuda:N or mps")
    task, n_classes = expected_task(d)
    if task is not None:
        check_task(params, task, n_classes)


def check_device(device: str) -> None:
    """Refuse an accelerator this machine does not have (imports torch only when one is asked)."""
    if device in ("auto", "cpu"):
        return
    import torch

    if device == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("train.device", device, "auto or cpu: MPS is not available here")
        return
    if not torch.cuda.is_available():
        raise ConfigError("train.device", device, "auto or cpu: CUDA is not available on this machine")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(
            "train.device", device, f"cuda:0..cuda:{torch.cuda.device_count() - 1} on this machine"
        )


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=0.01` -> (['train', 'lr'], 0.01); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError("--set", text, "KEY=VALUE with a dotted key, e.g. train.lr=0.01")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(".".join(path), value, f"a key under a section; {part} is a value")
            node = child
        node[path[-1]] = value
    return raw


_UNION_MEMBER = re.compile(
    r"^(int|float|str|bool|none|constrained-\w+|list\[.*\]|literal\[.*\]|function-.*)$"
)


def _key(loc: tuple[Any, ...]) -> str:
    # pydantic names union members in the location (`int`, `literal['full']`): drop them
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        elif not _UNION_MEMBER.match(part):
            key += f".{part}" if key else part
    return key


def _describe(errors: list[dict[str, Any]]) -> ConfigError:
    first = errors[0]
    key = _key(first["loc"])
    if first["type"] == "extra_forbidden":
        section = _section_model(first["loc"][:-1])
        allowed = ", ".join(section.model_fields) if section else "the documented keys"
        return ConfigError(key, first["input"], allowed, unknown=True)
    messages: list[str] = []
    for error in errors:
        if _key(error["loc"]) == key:
            message = error["msg"].removeprefix("Input should be ").removeprefix("input should be ")
            message = re.sub(r"a valid dictionary or instance of \w+", "a mapping of keys", message)
            messages.append(message)
    value = first.get("input")
    return ConfigError(key, value, " or ".join(dict.fromkeys(messages)))


def _section_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Params
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return None
        model = field.annotation
    return model


def params_from_dict(raw: dict[str, Any]) -> Params:
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        raise _describe(exc.errors()) from None
    check_combinations(params)
    return params


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Read, override and validate params.yaml; raise ConfigError on the first problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("--params", str(path), "an existing YAML file", location=None)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(str(path), f"invalid YAML at {where}", "a YAML mapping") from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), type(raw).__name__, "a mapping of sections") from None
    raw = apply_overrides(raw, list(overrides or []))
    try:
        return params_from_dict(raw)
    except ConfigError as exc:
        exc.location = exc.location or str(path)
        raise
