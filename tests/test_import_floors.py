"""Imports run one way (docs/architecture.md): read from every module's source, its
function-level imports included, so no module is imported and the test takes
milliseconds."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "onmt_qd"
# top to bottom, every unit of the package; a floor's units import none above theirs
FLOORS = [{"bin", "__init__"}, {"inference", "recipe"}, {"train"}, {"deploy"}, {"evaluate"},
          {"distill"}, {"processes"}, {"opts"}, {"quant_checkpoint", "qdz"}, {"models"},
          {"compat"}, {"datasets"}, {"codec"},
          {"fileio", "progress", "machine", "constants", "ct2_format"}, {"quant"}, {"registry"}]


def unit(module):
    """``onmt_qd.train.trainer`` -> ``train``; ``onmt_qd.opts`` -> ``opts``."""
    parts = module.split(".")
    return parts[1] if parts[0] == "onmt_qd" and len(parts) > 1 else None


def imported(path):
    """The modules ``path`` imports anywhere in it (``from onmt_qd import X``: onmt_qd.X)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            if node.module == "onmt_qd":
                yield from (f"onmt_qd.{alias.name}" for alias in node.names)
            else:
                yield node.module


def edges():
    """(importing unit, imported module, file) for every import of an onmt_qd or onmt module."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for name in imported(path):
            if name.split(".")[0] in ("onmt_qd", "onmt"):
                found.append((unit(module), name, path.relative_to(PACKAGE.parent)))
    return found


def floor(name):
    return next((i for i, units in enumerate(FLOORS) if name in units), None)


def test_no_import_runs_up_a_floor_or_across_inference_and_recipe():
    upward = [(str(path), name) for source, name, path in edges()
              if floor(source) is not None and floor(unit(name)) is not None
              and (floor(unit(name)) < floor(source)
                   or {source, unit(name)} == {"inference", "recipe"})]
    assert not upward


def test_every_unit_is_on_a_floor():
    """A new module or package is placed in FLOORS (and docs/architecture.md's
    diagram) when it is added, so no import escapes the rule."""
    units = {path.relative_to(PACKAGE).parts[0].removesuffix(".py")
             for path in PACKAGE.rglob("*.py")}
    assert units == set().union(*FLOORS)


@pytest.mark.parametrize("low", ["quant", "codec", "progress"])
def test_the_lowest_floors_import_no_opennmt(low):
    """quant is tensor math, codec bytes, progress a printer: each usable and testable
    without OpenNMT-py (and quant without the rest of onmt_qd but the registry pattern,
    plain Python below it)."""
    assert not [(str(path), name) for source, name, path in edges()
                if source == low and name.split(".")[0] == "onmt"]
    if low == "quant":
        assert {unit(name) for source, name, _ in edges()
                if source == "quant"} <= {"quant", "registry", None}


def test_the_rule_sees_an_upward_import(tmp_path, monkeypatch):
    """The check itself: opts importing train/ (as it once did) is caught."""
    fake = tmp_path / "onmt_qd"
    (fake / "train").mkdir(parents=True)
    (fake / "opts.py").write_text("from onmt_qd.train.precision import AUTOCAST_DTYPES\n")
    (fake / "train" / "precision.py").write_text("import torch\n")
    monkeypatch.setitem(globals(), "PACKAGE", fake)
    assert [(s, n) for s, n, _ in edges()] == [("opts", "onmt_qd.train.precision")]
    with pytest.raises(AssertionError):
        test_no_import_runs_up_a_floor_or_across_inference_and_recipe()


def test_every_module_imports():
    """Annotations naming what only type checkers import (``if TYPE_CHECKING``) need
    ``from __future__ import annotations``; a module without it fails at import, which a
    merge once left for a recipe run to find."""
    import importlib
    import pkgutil

    import onmt_qd

    for module in pkgutil.walk_packages(onmt_qd.__path__, "onmt_qd."):
        importlib.import_module(module.name)


def test_the_recipe_starts_without_torch():
    """onmt_qd_recipe reads and checks a recipe, and runs its stages as commands: its
    own process imports neither torch nor OpenNMT-py at the start (3.5 s, and
    OpenNMT-py's warnings on the recipe's standard error when a library user imports
    it unprepared)."""
    import subprocess
    import sys

    code = "import sys, onmt_qd.recipe; print(sorted({'torch', 'onmt'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]" and done.stderr == ""
