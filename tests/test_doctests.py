"""Every docstring example in the ``flint`` package runs as written (one test per module)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import flint


def _modules() -> list[str]:
    """Every module of the package; its subpackages live in folders of their own (setup.cfg's package_dir)."""
    names = []
    for package in ("flint", "flint.engine", "flint.handlers", "flint.recipes"):
        names.append(package)
        names += [info.name for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + ".")]
    return sorted(set(names) - {"flint.__main__"})


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (printed above)"
