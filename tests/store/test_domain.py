"""Whose code a worker runs: the Domain unpickler's exact allowlist and the space check.

Pickles are built by hand with ``pickle`` opcodes or ``__reduce__``, as an attacker with
write access to the database would build them; nothing here ever runs their payload.
"""

from __future__ import annotations

import os
import pickle
import re
import struct
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
from hyperopt import base, hp
from hyperopt.pyll import scope

from shared.domain import is_strix, load_domain
from shared.errors import JobError
from shared.spaces import SPACES
from shared.training.jobs import keras_space, objective, toy_objective, toy_space
from tests.hyperopt_user.objective import SPACE, quadratic


class _Call:
    """Pickles as ``fn(*args)``: the shape of every call gadget."""

    def __init__(self, fn: object, *args: object) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple:
        return self.fn, self.args


@pytest.mark.parametrize(
    "gadget, name",
    [
        (_Call(__import__("os").system, "true"), "posix.system"),
        (_Call(np.load, "x.npy"), "numpy.load"),
        (_Call(eval, "1"), "builtins.eval"),
        (_Call(getattr, object, "x"), "builtins.getattr"),
        (_Call(__import__("subprocess").call, ["true"]), "subprocess.call"),
        (_Call(np.lib.format.read_array, None), "numpy.lib.format.read_array"),
    ],
)
def test_call_gadgets_are_refused(gadget: object, name: str) -> None:
    blob = pickle.dumps(gadget)
    with pytest.raises(JobError, match=re.escape(f"refusing to run code from {name}")):
        load_domain(blob)


def test_every_strix_space_loads() -> None:
    for model, make in SPACES.items():
        try:
            params = make(image_size=32)
        except TypeError:
            params = make()
        domain = base.Domain(objective, keras_space(model, params, {}, {}, seed=1))
        assert load_domain(cloudpickle.dumps(domain)).fn is objective, model
    toy = base.Domain(toy_objective, toy_space(0.1))
    assert is_strix(load_domain(cloudpickle.dumps(toy)))


def test_an_allowed_package_runs_its_own_objective_only() -> None:
    blob = cloudpickle.dumps(base.Domain(quadratic, SPACE))
    with pytest.raises(JobError, match="--allow-module PKG"):
        load_domain(blob)
    domain = load_domain(blob, ["tests.hyperopt_user"])
    assert domain.fn is quadratic and not is_strix(domain)
    with pytest.raises(JobError, match=r"refusing to run code from tests\.hyperopt_user"):
        load_domain(blob, ["tests.hyperopt"])  # a prefix is not the package


def test_a_space_that_calls_methods_is_refused() -> None:
    evil = scope.call_method("echo hi", "upper")  # graph nodes may call methods by name
    domain = base.Domain(toy_objective, {"x": hp.uniform("x", 0, 1), "y": evil})
    with pytest.raises(JobError, match="refusing a search space with a 'call_method' node"):
        load_domain(cloudpickle.dumps(domain))


# --- crafted pickles: what a writer of the database can put in a Domain attachment ------
PKG = ["tests.hyperopt_user"]
NS = "tests.hyperopt_user.namespace"


def _str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def crafted(module: str, name: str, *ops: bytes) -> bytes:
    """A protocol-4 pickle that looks up ``module`` + ``name`` (STACK_GLOBAL), then ``ops``."""
    return b"\x80\x04" + _str(module) + _str(name) + b"\x93" + b"".join(ops) + b"."


def call(*args: str | list[str]) -> bytes:
    """Call what is on the stack with ``args`` (REDUCE)."""
    items = [_str(a) if isinstance(a, str) else b"](" + b"".join(map(_str, a)) + b"e" for a in args]
    return b"(" + b"".join(items) + b"tR"


def set_state(key: str) -> bytes:
    """BUILD: set attribute ``key`` = 1 on what is on the stack."""
    return b"}" + _str(key) + b"K\x01sb"


def test_a_dotted_name_cannot_walk_out_of_an_allowed_package(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    blob = crafted(
        "tests.hyperopt_user.objective",
        "quadratic.__builtins__.get",  # -> builtins dict .get -> exec
        call("exec"),
        call(f"open({str(marker)!r}, 'w').write('x')"),
    )
    with pytest.raises(JobError, match=r"refusing to run code from .*quadratic\.__builtins__"):
        load_domain(blob, PKG)
    assert not marker.exists()


def test_a_module_attribute_that_is_a_module_is_refused() -> None:
    blob = crafted(NS, "os", set_state("strix_pwned"))  # would set os.strix_pwned = 1
    with pytest.raises(JobError, match=re.escape(f"refusing to run code from {NS}.os")):
        load_domain(blob, PKG)
    assert not hasattr(os, "strix_pwned")


def test_a_builtin_re_exported_by_the_package_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    blob = crafted(NS, "evaluate", call(f"open({str(marker)!r}, 'w').write('x')"))
    with pytest.raises(JobError, match=re.escape(f"refusing to run code from {NS}.evaluate")):
        load_domain(blob, PKG)
    assert not marker.exists()


def test_a_class_of_the_package_leads_nowhere_outside_it(tmp_path: Path) -> None:
    from tests.hyperopt_user.namespace import Shell

    with pytest.raises(JobError, match=r"refusing to run code from posix\.system"):
        load_domain(pickle.dumps(Shell()), PKG)  # its __reduce__ names os.system itself
    marker = tmp_path / "pwned"
    for name, args in [("Shell.run", f"touch {marker}"), ("Popen", ["touch", str(marker)])]:
        with pytest.raises(JobError, match=re.escape(f"refusing to run code from {NS}.{name}")):
            load_domain(crafted(NS, name, call(args)), PKG)
    time.sleep(0.5)  # a Popen that got through would have touched the marker by now
    assert not marker.exists()


def test_the_package_own_functions_cannot_be_rewritten() -> None:
    from tests.hyperopt_user import namespace

    blob = crafted(NS, "scaled", set_state("strix_pwned"))
    with pytest.raises(JobError, match=r"refusing to set the state of .*scaled"):
        load_domain(blob, PKG)
    assert not hasattr(namespace.scaled, "strix_pwned")
    with pytest.raises(JobError, match="holds a function"):
        load_domain(crafted(NS, "scaled"), PKG)  # its own function is admitted (not a Domain)


MATH = ["sin", "cos", "tan", "exp", "log", "sqrt", "maximum", "minimum", "pow", "neg", "abs"]


def test_every_pure_math_node_of_pyll_is_admitted() -> None:
    x = hp.uniform("x", 0.1, 1)
    space = {name: getattr(scope, name) for name in MATH if hasattr(scope, name)}
    two = ("maximum", "minimum", "pow")
    params = {k: fn(x, x) if k in two else fn(x) for k, fn in space.items()}
    params["cmp"] = [scope.eq(x, 1), scope.lt(x, 1), scope.le(x, 1), scope.gt(x, 1), scope.ge(x, 1)]
    params["agg"] = [scope.sum([x, x]), scope.max(x, 1), scope.min(x, 1)]
    domain = load_domain(cloudpickle.dumps(base.Domain(quadratic, params)), PKG)
    assert domain.fn is quadratic
