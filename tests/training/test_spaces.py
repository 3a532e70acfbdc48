"""Search spaces: the seed's spaces verbatim, unique labels, int types, clamping, flatten.

No TensorFlow here: the coordinator imports shared.spaces only to build spaces.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hyperopt import Trials, fmin, rand
from hyperopt.pyll import as_apply, dfs

from shared import spaces
from shared.errors import ConfigError

SEED_KEYS = {
    "batch_size",
    "learning_rate",
    "fcl_num_layers",
    "fcl_layer_size",
    "fcl_dropout_rate",
    "activation",
    "optimizer",
}
INT_KEYS = {
    "batch_size",
    "num_blocks",
    "block_size",
    "fcl_num_layers",
    "fcl_layer_size",
    "dense_units",
    "num_conv_layers",
    "filters",
    "hidden_units",
}


def labels(space: dict) -> list[str]:
    """Every hyperopt label in a space, once per parameter node."""
    return [node.arg["label"].obj for node in dfs(as_apply(space)) if node.name == "hyperopt_param"]


def test_importing_spaces_does_not_import_tensorflow() -> None:
    code = "import sys, shared.spaces; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", sorted(spaces.SPACES))
@pytest.mark.parametrize("augment", [False, True])
def test_labels_are_unique(name: str, augment: bool) -> None:
    found = labels(spaces.SPACES[name](augment=augment))
    assert found, "a space without parameters"
    assert len(found) == len(set(found)), sorted(found)


@pytest.mark.parametrize("name", sorted(spaces.SPACES))
def test_hyperopt_accepts_every_space(name: str) -> None:
    """hyperopt itself validates the space (duplicate labels, bad nodes) in fmin."""
    trials = Trials()
    fmin(
        lambda p: 0.0,
        spaces.SPACES[name](augment=True),
        algo=rand.suggest,
        max_evals=3,
        trials=trials,
        rstate=np.random.default_rng(0),
        show_progressbar=False,
    )
    assert len(trials.trials) == 3


def test_convstrix_space_is_the_seed() -> None:
    space = spaces.convstrix_space()
    assert set(space) == SEED_KEYS | {"num_blocks", "block_size"}
    assert set(labels(space)) == set(space)
    for p in spaces.sample(space, rng_seed=1, n=300):
        assert p["batch_size"] in (16, 32, 64)
        assert 1e-4 <= p["learning_rate"] <= 1.0
        assert 2 <= p["num_blocks"] <= 6
        assert 1 <= p["block_size"] <= 3
        assert 1 <= p["fcl_num_layers"] <= 4
        assert p["fcl_layer_size"] in (512, 768, 1024, 1536)
        assert 0.05 - 1e-9 <= p["fcl_dropout_rate"] <= 0.5 + 1e-9
        assert p["activation"] in ("relu", "selu", "tanh")
        assert p["optimizer"] in ("adam", "adamax", "nadam", "rms-prop")
    drawn = {p["num_blocks"] for p in spaces.sample(space, rng_seed=2, n=300)}
    assert drawn == {2, 3, 4, 5, 6}


def test_vggstrix_space_is_the_seed() -> None:
    space = spaces.vggstrix_space()
    assert set(space) == SEED_KEYS | {"conv"}
    convs = [p["conv"] for p in spaces.sample(space, rng_seed=3, n=300)]
    pairs = {(c["num_blocks"], c["block_size"]) for c in convs}
    assert pairs == {(0, 0), (1, 1), (1, 2), (1, 3), (2, 1), (3, 1)}


@pytest.mark.parametrize("name", sorted(spaces.SPACES))
def test_sampled_ints_are_ints(name: str) -> None:
    for params in spaces.sample(spaces.SPACES[name](), rng_seed=4, n=100):
        flat = spaces.flatten(params)
        for key in INT_KEYS & set(flat):
            assert type(flat[key]) is int, (key, flat[key])
        assert isinstance(flat["learning_rate"], float)


def test_max_blocks() -> None:
    assert [spaces.max_blocks(s) for s in (1, 2, 3, 4, 16, 31, 32, 128)] == [1, 2, 2, 3, 5, 5, 6, 8]
    with pytest.raises(ConfigError):
        spaces.max_blocks(0)


def num_blocks_bounds(space: dict) -> tuple[int, int]:
    """(low, high) of the num_blocks distribution, or (n, n) when clamping left one value."""
    if isinstance(space["num_blocks"], int):
        return space["num_blocks"], space["num_blocks"]
    for node in dfs(as_apply(space)):
        if node.name == "hyperopt_param" and node.arg["label"].obj == "num_blocks":
            dist = node.arg["obj"]
            return dist.arg["low"].obj, dist.arg["high"].obj
    raise AssertionError("no num_blocks parameter")


def test_clamp_respects_max_blocks() -> None:
    for size in range(16, 129):
        space = spaces.convstrix_space(image_size=size, clamp=True)
        assert num_blocks_bounds(space) == (2, min(6, spaces.max_blocks(size))), size
    for size, allowed in ((16, 5), (31, 5), (32, 6), (128, 6)):
        space = spaces.convstrix_space(image_size=size, clamp=True)
        drawn = {p["num_blocks"] for p in spaces.sample(space, rng_seed=size, n=80)}
        assert drawn == set(range(2, allowed + 1)), (size, drawn)
    tiny = spaces.sample(spaces.convstrix_space(image_size=3, clamp=True), rng_seed=0, n=5)
    assert {p["num_blocks"] for p in tiny} == {2}


def test_clamp_needs_an_image_size() -> None:
    with pytest.raises(ConfigError, match="image_size"):
        spaces.convstrix_space(clamp=True)


def test_unclamped_space_ignores_image_size() -> None:
    drawn = spaces.sample(spaces.convstrix_space(image_size=16), rng_seed=5, n=200)
    assert max(p["num_blocks"] for p in drawn) == 6


@pytest.mark.parametrize("name", sorted(spaces.SPACES))
def test_augment_adds_probabilities(name: str) -> None:
    plain = spaces.SPACES[name]()
    space = spaces.SPACES[name](augment=True)
    assert set(space) - set(plain) == {"aug_crop", "aug_flip", "aug_rotate"}
    values = {
        p[k] for p in spaces.sample(space, 6, 100) for k in ("aug_crop", "aug_flip", "aug_rotate")
    }
    assert values == {0.0, 0.5}


def test_flatten_merges_the_conv_branch() -> None:
    params = {"batch_size": 32, "conv": {"num_blocks": 2, "block_size": 1}, "activation": "relu"}
    assert spaces.flatten(params) == {
        "batch_size": 32,
        "num_blocks": 2,
        "block_size": 1,
        "activation": "relu",
    }
    assert spaces.flatten({"num_blocks": 9, "conv": {"num_blocks": 0}}) == {"num_blocks": 0}
    assert spaces.flatten({"a": {"b": {"c": 1}}}) == {"c": 1}
    for p in spaces.sample(spaces.vggstrix_space(), rng_seed=7, n=50):
        flat = spaces.flatten(p)
        assert "conv" not in flat
        assert {"num_blocks", "block_size"} <= set(flat)


def test_sample_is_reproducible() -> None:
    space = spaces.acosta_space(augment=True)
    assert spaces.sample(space, 11, 20) == spaces.sample(space, 11, 20)
    assert spaces.sample(space, 11, 20) != spaces.sample(space, 12, 20)
