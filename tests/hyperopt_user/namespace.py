"""What a real package's namespace holds besides its own code.

A package that a worker allows (``--allow-module tests.hyperopt_user``) still imports
modules, re-exports builtins and library classes, and defines classes whose attributes
lead elsewhere. None of these is the package's own function or class, so the Domain
unpickler must refuse every one of them; tests/store/test_domain.py builds the pickles.
"""

from __future__ import annotations

import os  # (a module attribute that is itself a module: PKG.os)
from subprocess import Popen  # noqa: F401  (a library class re-exported by the package)

evaluate = eval  # a builtin re-exported under another name


class Shell:
    """A class of the package whose attributes and ``__reduce__`` lead outside it."""

    run = staticmethod(os.system)

    def __reduce__(self) -> tuple:
        return os.system, ("true",)


def scaled(params: dict) -> float:
    """The package's own function: admitted."""
    return float(params["x"]) * 2.0
