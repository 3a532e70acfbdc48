"""Whose code a worker runs: the Domain unpickler's exact allowlist and the space check.

Pickles are built by hand with ``pickle`` opcodes or ``__reduce__``, as an attacker with
write access to the database would build them; nothing here ever runs their payload.
"""

from __future__ import annotations

import pickle
import re

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
