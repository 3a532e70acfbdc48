"""Hyperopt search spaces, one function per model (no TensorFlow here).

The coordinator imports this module only to build spaces, so it must stay free of
TensorFlow/Keras. :func:`max_blocks` (ConvStrix geometry) lives in the light
:mod:`shared.catalog`, so launch checks sizes without hyperopt; ``shared.models.convstrix``
re-exports it.

ConvStrix and VGGStrix are the seed's spaces (guidj, "Fashion, Trees, and Convolutions:
Part III") verbatim, labels included; their VGGStrix ``conv`` choice uses the labels
``block_size``/``num_blocks`` once each, so labels are unique within every space (tested).
The seed's Part II baseline space is not among our sources: ``baseline_space`` reuses the
Part III fully connected and training parameters. Every space function takes the same
keywords:

- ``clamp=True`` (needs ``image_size``): shrink ``num_blocks``' range to what the image
  allows. The seed added VGGStrix's conditional tree "to prevent invalid combinations,
  which would only waste resources"; clamping does the same for ConvStrix at small image
  sizes (6 blocks need >= 32 px). Models whose depth is fixed ignore it.
- ``augment=True``: also tune the per-image augmentation probabilities (0 = off).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hyperopt import hp
from hyperopt.pyll import scope, stochastic

from shared.catalog import CONVSTRIX_MAX_BLOCKS, max_blocks
from shared.errors import ConfigError

OPTIMIZERS = ["adam", "adamax", "nadam", "rms-prop"]
ACTIVATIONS = ["relu", "selu", "tanh"]
FCL_SIZES = [512, 768, 1024, 1536]
AUG_CHOICES = [0.0, 0.5]


def _int_range(label: str, low: int, high: int) -> Any:
    """``scope.int(quniform)`` as in the seed; a constant when the range is one value."""
    if high <= low:
        return int(low)
    return scope.int(hp.quniform(label, low=low, high=high, q=1))


def _train_keys(lr_low: float = 1e-4, lr_high: float = 1.0) -> dict[str, Any]:
    return {
        "batch_size": hp.choice("batch_size", options=[2**x for x in range(4, 6 + 1)]),
        "learning_rate": hp.loguniform("learning_rate", low=np.log(lr_low), high=np.log(lr_high)),
        "optimizer": hp.choice("optimizer", options=OPTIMIZERS),
    }


def _fcl_keys() -> dict[str, Any]:
    return {
        "fcl_num_layers": scope.int(hp.quniform("fcl_num_layers", low=1, high=4, q=1)),
        "fcl_layer_size": hp.choice("fcl_layer_size", options=FCL_SIZES),
        "fcl_dropout_rate": hp.quniform("fcl_dropout_rate", low=0.05, high=0.5, q=0.05),
        "activation": hp.choice("activation", options=ACTIVATIONS),
    }


def _finish(space: dict[str, Any], augment: bool) -> dict[str, Any]:
    if augment:
        for key in ("aug_crop", "aug_flip", "aug_rotate"):
            space[key] = hp.choice(key, options=AUG_CHOICES)
    return space


def _check_clamp(clamp: bool, image_size: int | None) -> None:
    if clamp and image_size is None:
        raise ConfigError("clamp=True needs image_size (the side in px the trials will use)")


def convstrix_space(
    *, image_size: int | None = None, clamp: bool = False, augment: bool = False
) -> dict:
    """Seed Part III ConvStrix space; ``clamp`` caps num_blocks at :func:`max_blocks`."""
    _check_clamp(clamp, image_size)
    high = CONVSTRIX_MAX_BLOCKS
    if clamp and image_size is not None:
        high = min(high, max_blocks(image_size))
    space = {
        **_train_keys(),
        "num_blocks": _int_range("num_blocks", min(2, high), high),
        "block_size": scope.int(hp.quniform("block_size", low=1, high=3, q=1)),
        **_fcl_keys(),
    }
    return _finish(space, augment)


def vggstrix_space(
    *, image_size: int | None = None, clamp: bool = False, augment: bool = False
) -> dict:
    """Seed Part III VGGStrix space. ``clamp`` is a no-op: the model skips pools at 1x1."""
    _check_clamp(clamp, image_size)
    conv = hp.choice(
        "conv",
        [
            {"num_blocks": 0, "block_size": 0},
            {
                "num_blocks": 1,
                "block_size": scope.int(hp.quniform("block_size", low=1, high=3, q=1)),
            },
            {
                "num_blocks": scope.int(hp.quniform("num_blocks", low=2, high=3, q=1)),
                "block_size": 1,
            },
        ],
    )
    return _finish({**_train_keys(), "conv": conv, **_fcl_keys()}, augment)


def baseline_space(
    *, image_size: int | None = None, clamp: bool = False, augment: bool = False
) -> dict:
    """Fully connected baseline: the Part III fcl/training keys (Part II's are not at hand)."""
    _check_clamp(clamp, image_size)
    return _finish({**_train_keys(), **_fcl_keys()}, augment)


def simplecnn_space(
    *, image_size: int | None = None, clamp: bool = False, augment: bool = False
) -> dict:
    """Around the paper's choice (Adam 1e-3, dropout 0.5, dense 128)."""
    _check_clamp(clamp, image_size)
    space = {
        **_train_keys(lr_low=1e-4, lr_high=1e-2),
        "dropout_rate": hp.quniform("dropout_rate", low=0.1, high=0.6, q=0.05),
        "dense_units": hp.choice("dense_units", options=[64, 128, 256]),
        "activation": hp.choice("activation", options=ACTIVATIONS),
    }
    return _finish(space, augment)


def mobilenet_space(
    *, image_size: int | None = None, clamp: bool = False, augment: bool = False
) -> dict:
    """Fine-tuning a pretrained net: small learning rates around the paper's 3e-4."""
    _check_clamp(clamp, image_size)
    space = {
        "batch_size": hp.choice("batch_size", options=[16, 32, 64]),
        "learning_rate": hp.loguniform("learning_rate", low=np.log(5e-5), high=np.log(2e-3)),
        "optimizer": hp.choice("optimizer", options=["adam", "nadam"]),
        "dropout_rate": hp.quniform("dropout_rate", low=0.0, high=0.5, q=0.05),
    }
    return _finish(space, augment)


def acosta_space(
    *, image_size: int | None = None, clamp: bool = False, augment: bool = False
) -> dict:
    """The grid of Sánchez Acosta & Keith (conv layers, filters, pooling, hidden, dropout)."""
    _check_clamp(clamp, image_size)
    space = {
        **_train_keys(lr_low=1e-4, lr_high=1e-1),
        "num_conv_layers": scope.int(hp.quniform("num_conv_layers", low=1, high=2, q=1)),
        "filters": hp.choice("filters", options=[32, 64]),
        "pooling": hp.choice("pooling", options=["avg", "max"]),
        "hidden_units": hp.choice("hidden_units", options=[256, 512, 1024]),
        "dropout_rate": hp.quniform("dropout_rate", low=0.0, high=0.5, q=0.1),
    }
    return _finish(space, augment)


SPACES: dict[str, Callable[..., dict]] = {
    "convstrix": convstrix_space,
    "vggstrix": vggstrix_space,
    "baseline": baseline_space,
    "simplecnn": simplecnn_space,
    "mobilenet": mobilenet_space,
    "mobilenet_lite": mobilenet_space,
    "acosta": acosta_space,
}


def flatten(params: dict) -> dict:
    """Merge nested dicts (VGGStrix's ``conv`` choice) into one flat dict of builder kwargs.

    A nested key wins over a top-level key of the same name: the nested value is the one
    the conditional branch actually chose.
    """
    flat: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            nested.update(flatten(value))
        else:
            flat[key] = value
    flat.update(nested)
    return flat


def sample(space: dict, rng_seed: int, n: int) -> list[dict]:
    """``n`` reproducible draws from ``space`` (tests, dry runs, random baselines)."""
    rng = np.random.default_rng(rng_seed)
    return [stochastic.sample(space, rng=rng) for _ in range(n)]
