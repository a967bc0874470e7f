"""The examples in docstrings run as written."""

from __future__ import annotations

import doctest

import gradcheck.backends


def test_source_module_docstring_example() -> None:
    result = doctest.testmod(gradcheck.backends, verbose=False)
    assert result.attempted > 0 and result.failed == 0
