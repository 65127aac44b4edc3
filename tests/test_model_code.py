"""Which of the package's files a logged model carries (pipeline.model_code), read from imports."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import model_code


def test_the_served_files_are_serving_and_what_it_imports_at_any_depth() -> None:
    files = model_code.served_files()
    # serving imports checkpoints and evaluation inside methods; checkpoints imports config, model,
    # files, errors and the package's __version__
    assert set(files) == {
        "__init__.py", "serving.py", "checkpoints.py", "evaluation.py", "model.py", "config.py",
        "files.py", "errors.py",
    }
    assert all((model_code.PACKAGE / f).is_file() for f in files)


@pytest.mark.parametrize(
    ("name", "files"),
    [
        ("pipeline", ["__init__.py"]),
        ("pipeline.model", ["__init__.py", "model.py"]),
        ("pipeline.__version__", ["__init__.py"]),  # an attribute, not a module
        ("pipeline.data.dataset", ["__init__.py", "data/__init__.py", "data/dataset.py"]),
        ("pipeline.data", ["__init__.py", "data/__init__.py"]),
        ("pipeline.nothing_here", ["__init__.py"]),
    ],
)
def test_a_dotted_name_runs_each_package_init_down_to_its_module(name: str, files: list[str]) -> None:
    assert model_code._files_of(name) == files


def test_imports_are_found_in_functions_and_from_forms_but_not_other_packages() -> None:
    import ast

    tree = ast.parse(
        "import os\n"
        "import pipeline.errors\n"
        "from pipeline import model, __version__\n"
        "def f():\n"
        "    from pipeline.data import dataset\n"
        "from piper import x\n"
        "from . import relative\n"
    )
    names = set(model_code._imported_names(tree))
    assert names == {
        "pipeline.errors", "pipeline", "pipeline.model", "pipeline.__version__",
        "pipeline.data", "pipeline.data.dataset",
    }


def test_the_staged_folder_holds_the_served_files_and_is_removed_after() -> None:
    with model_code.staged() as folder:
        staged = Path(folder)
        assert staged.name == "pipeline"
        found = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
        assert found == list(model_code.served_files())
        for name in found:
            assert (staged / name).read_bytes() == (model_code.PACKAGE / name).read_bytes()
    assert not staged.exists()
