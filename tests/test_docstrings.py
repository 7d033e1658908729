"""Every module's docstring example runs and shows what it says (the examples are the first thing
a newcomer reads, so a stale one is a bug)."""

import doctest
import importlib
import pkgutil

import pytest

import verydeep

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(verydeep.__path__, "verydeep.") if m.name != "verydeep.__main__"
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
