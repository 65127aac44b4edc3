"""The GPU check's kit (benchmarks/device_kit.py, benchmarks/on_device.sh): which wheels travel
to the device machine, and the script's refusal without them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from benchmarks.device_kit import ALONE, BUILT, IMAGE_HOLDS, NEEDS, distribution, normalized, to_carry

REPO = Path(__file__).resolve().parents[1]


def test_a_wheels_name_is_read_as_package_indexes_compare_names():
    assert distribution("typing_inspection-0.4.5-py3-none-any.whl") == "typing-inspection"
    assert distribution("Flask_CORS-6.0.5-py3-none-any.whl") == "flask-cors"
    assert distribution("ruamel.yaml.clib-0.2.12-cp312-cp312-manylinux2014_x86_64.whl") == "ruamel-yaml-clib"
    assert distribution("mlflow-3.17.2-py3-none-any.whl") == "mlflow"


def test_only_what_the_image_lacks_travels():
    wheels = [
        "mlflow-3.17.2-py3-none-any.whl",
        "numpy-2.4.6-cp312-cp312-manylinux_2_28_x86_64.whl",  # the image's own stays
        "PyYAML-6.0.3-cp312-cp312-manylinux_2_17_x86_64.whl",
        "pydantic_core-2.50.5-cp312-cp312-manylinux2014_x86_64.whl",
        "pydantic-2.14.4-py3-none-any.whl",
        "README.txt",
    ]
    assert to_carry(wheels) == [
        "mlflow-3.17.2-py3-none-any.whl",
        "pydantic-2.14.4-py3-none-any.whl",
        "pydantic_core-2.50.5-cp312-cp312-manylinux2014_x86_64.whl",
    ]


def test_what_the_suite_needs_is_not_taken_for_the_images():
    assert not {normalized(name) for name in NEEDS + ALONE + BUILT} & IMAGE_HOLDS


def test_the_device_script_says_in_one_line_what_is_missing(tmp_path):
    env = {**os.environ, "WHEELS": str(tmp_path / "none"), "OUT": str(tmp_path / "out")}
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "on_device.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"on_device: no wheels in {tmp_path / 'none'}: run 'python -m benchmarks.device_kit wheels' "
        "here first, then carry .whl"
    ]
    assert not (tmp_path / "out").exists()  # nothing written
