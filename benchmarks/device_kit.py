"""The GPU check prepared for a session that is lent the device machine, to fit its 15 minutes.

That machine (an H200) runs an image of its own: Python 3.12 with torch, torchvision, NumPy,
pandas, scikit-learn and more, but no MLflow, pydantic or Hydra, and it reaches no package index.
What the suite needs beyond the image travels as wheels in `.whl/` (ignored by git):

    python -m benchmarks.device_kit wheels      # here, before asking for the machine (~15 s)
    bash benchmarks/on_device.sh                # there: run tool, carry [".whl"], timeout_s 540

`on_device.sh` installs the wheels into /tmp/site (the project runs from `src/`), then runs the
two checks benchmarks/README.md ("GPU") names, their JSON and logs under $OUT.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / ".whl"
BUDGET = 60 << 20  # what may travel: 64 MiB a call, less the working tree and some room

# distributions the image holds (as read on 2026-11-17: /work/.library/device/KINDS.md); a wheel
# of one of these is left out, so the image's own version is the one imported
_IMAGE_LIST = """
    absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
    botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
    coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython
    diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
    frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
    hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib
    jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator
    lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
    mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx
    ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
    nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand
    nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13
    nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
    opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
    pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf
    psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest
    pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
    pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core
    scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools
    shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
    tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz
    torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers
    treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
    werkzeug wheel wrapt xarray xxhash yarl zipp
"""
IMAGE_HOLDS = frozenset(_IMAGE_LIST.split())

# what the suite's GPU rows import beyond the image: MLflow for tracked runs, pydantic for params,
# Hydra for composing the experiments; each at this environment's version
NEEDS = ("mlflow", "pydantic")  # with what they require, as wheels for the device's platform
ALONE = ("hydra-core", "omegaconf")  # without: their ANTLR runtime is published as source only
BUILT = ("antlr4-python3-runtime",)  # pure Python: built here into a wheel that runs on any CPython
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)


def normalized(name: str) -> str:
    """A distribution's name as package indexes compare names (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def distribution(wheel: str) -> str:
    """A wheel file's distribution name, normalised."""
    return normalized(wheel.split("-", 1)[0])


def to_carry(wheels: list[str], holds: frozenset[str] = IMAGE_HOLDS) -> list[str]:
    """The wheels the image lacks, in name order."""
    return sorted(
        (w for w in wheels if w.endswith(".whl") and distribution(w) not in holds), key=distribution
    )


def pinned(names: tuple[str, ...]) -> list[str]:
    return [f"{name}=={version(name)}" for name in names]


def download(dest: Path, python: str) -> int:
    """`NEEDS`, `ALONE` and `BUILT` at this environment's versions, as wheels for the device's
    Python; keeps those the image lacks in `dest`. Returns the exit status."""
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    pip = [sys.executable, "-m", "pip"]
    fetch = [*pip, "download", "--quiet", "--only-binary=:all:", "--python-version", python]
    fetch += ["--implementation", "cp", *platforms]
    with tempfile.TemporaryDirectory(prefix="device-wheels-") as tmp:
        steps = [
            [*fetch, "-d", tmp, *pinned(NEEDS)],
            [*fetch, "--no-deps", "-d", tmp, *pinned(ALONE)],
            [*pip, "wheel", "--quiet", "--no-deps", "-w", tmp, *pinned(BUILT)],
        ]
        for command in steps:
            if subprocess.run(command).returncode:
                print(f"device_kit: pip failed ({' '.join(command[3:5])}; see above)", file=sys.stderr)
                return 1
        carried = to_carry([path.name for path in Path(tmp).iterdir()])
        total = sum((Path(tmp) / name).stat().st_size for name in carried)
        if total > BUDGET:
            print(
                f"device_kit: {total >> 20} MiB of wheels, over the {BUDGET >> 20} MiB that may travel",
                file=sys.stderr,
            )
            return 1
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for name in carried:
            shutil.move(str(Path(tmp) / name), dest / name)
    pins = ", ".join(pinned(NEEDS + ALONE + BUILT))
    print(f"{len(carried)} wheels, {total / (1 << 20):.1f} MiB, in {dest} (for Python {python}): {pins}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.device_kit", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    wheels = commands.add_parser("wheels", help="download what the device's image lacks into .whl/")
    wheels.add_argument("--dest", type=Path, default=WHEELS)
    wheels.add_argument("--python", default="3.12", help="the device's Python (default 3.12)")
    args = parser.parse_args()
    sys.exit(download(args.dest, args.python))


if __name__ == "__main__":
    main()
