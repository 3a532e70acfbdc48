"""Whose code a worker runs: loading the Domain that ``fmin`` pickled into MongoDB.

A pickle can name any importable callable, and a hyperopt expression graph can call
methods by name, so both are checked before anything runs:

* the unpickler admits only the exact classes a Domain pickle needs, Strix's own
  objectives, and, under packages the worker's operator allowed (``--allow-module``),
  the functions and classes those packages define themselves: never a dotted name
  (``PKG.mod.fn.__builtins__.get`` walks to ``exec``), a module (``PKG.os``), a
  re-exported builtin or library class, and it never sets the state of a function,
  class or module (BUILD would rewrite installed code's attributes);
* every node of the search-space graph must be a sampling or arithmetic node that
  hyperopt's ``hp.*`` functions produce, or pure math (``scope.sin``...);
  ``call``/``call_method``/``getattr`` nodes are refused.

Code stored in the database never runs: an allowed objective is imported by name from
the worker's own installed packages.
"""

from __future__ import annotations

import inspect
import io
import pickle
from collections.abc import Iterable
from typing import Any

from shared.errors import JobError

_CLASSES = {
    ("hyperopt.base", "Domain"),
    ("hyperopt.pyll.base", "Apply"),
    ("hyperopt.pyll.base", "Literal"),
    ("hyperopt.vectorize", "VectorizeHelper"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "complex"),
    ("builtins", "slice"),
    ("builtins", "range"),
    ("shared.training.jobs", "objective"),
    ("shared.training.jobs", "toy_objective"),
}
_SPACE_NODES = {
    *("hyperopt_param", "literal", "pos_args", "dict", "switch", "getitem", "identity"),
    *("uniform", "quniform", "loguniform", "qloguniform", "uniformint", "randint"),
    *("normal", "qnormal", "lognormal", "qlognormal", "categorical", "randint_via_categorical"),
    *("int", "float", "bool", "len", "abs", "neg", "add", "sub", "mul", "truediv", "floordiv"),
    *("pow", "mod", "exp", "log", "sqrt", "maximum", "minimum", "round", "array_union"),
    # the rest of pyll's pure math: numbers in, a number out, no names looked up
    *("sin", "cos", "tan", "arctan", "sum", "max", "min", "eq", "lt", "le", "gt", "ge"),
}
_HOW_TO = (
    "workers only run functions of the installed `shared` package; post the study with "
    "`python -m coordinator.launch`, or start the worker with --allow-module PKG to run "
    "an objective from a package installed on it"
)


def _allowed_by(module: str, packages: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _refuse(module: str, name: str) -> JobError:
    return JobError(f"refusing to run code from {module}.{name}: {_HOW_TO}")


def _own_code(obj: Any, packages: Iterable[str]) -> bool:
    """A function or class that an allowed package defines itself (not one it imports)."""
    kind = inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)
    return kind and _allowed_by(str(getattr(obj, "__module__", None) or ""), packages)


class _Opcodes(dict):
    def __missing__(self, key: int) -> Any:
        raise pickle.UnpicklingError(f"invalid load key, {chr(key)!r}.")  # as C pickle says


class _SafeUnpickler(pickle._Unpickler):  # the Python one: BUILD can be checked
    def __init__(self, blob: bytes, allow_modules: tuple[str, ...]) -> None:
        super().__init__(io.BytesIO(blob))
        self.allow_modules = allow_modules
        self.dispatch = _Opcodes({**self.dispatch, pickle.BUILD[0]: _SafeUnpickler.load_build})

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _CLASSES:
            return super().find_class(module, name)
        if "." in name or not _allowed_by(module, self.allow_modules):
            raise _refuse(module, name)
        obj = super().find_class(module, name)
        if not _own_code(obj, self.allow_modules):
            raise _refuse(module, name)
        return obj

    def load_build(self) -> None:
        target = self.stack[-2] if len(self.stack) >= 2 else None
        if inspect.isroutine(target) or inspect.isclass(target) or inspect.ismodule(target):
            name = getattr(target, "__qualname__", getattr(target, "__name__", "?"))
            raise JobError(f"refusing to set the state of {name}: {_HOW_TO}")
        super().load_build()


def check_space(domain: Any) -> None:
    """Refuse a search-space graph that holds anything but sampling and arithmetic."""
    from hyperopt.pyll import dfs

    for node in dfs(domain.expr):
        if node.name not in _SPACE_NODES:
            raise JobError(
                f"refusing a search space with a {node.name!r} node: spaces may only use "
                "hyperopt's hp.* functions and arithmetic"
            )


def load_domain(blob: bytes, allow_modules: Iterable[str] = ()) -> Any:
    """Unpickle hyperopt's Domain from installed, allowed code only."""
    try:
        domain = _SafeUnpickler(blob, tuple(allow_modules)).load()
    except JobError:
        raise
    except Exception as e:  # a garbled attachment can fail in many ways
        raise JobError(f"the study's pickled Domain cannot be loaded: {e!r}") from None
    if not hasattr(domain, "expr") or not callable(getattr(domain, "fn", None)):
        raise JobError(f"the study's Domain attachment holds a {type(domain).__name__}")
    check_space(domain)
    return domain


def is_strix(domain: Any) -> bool:
    """Whether the Domain's objective is one of Strix's own (it takes a Strix trial dict)."""
    return getattr(domain.fn, "__module__", None) == "shared.training.jobs"
