"""The model registry: names, builders, spaces and scheduling data for every model.

The registry is data: the resource class ("light" models share a GPU, a "heavy" one takes
it whole) and the default image size are facts users may override (:func:`with_resource`).
:func:`build_model` is the one door from a trial's hyperopt parameters to a Keras model:
it flattens conditional choices, drops the training-only keys and fixes int types that
came back from hyperopt or MongoDB as floats. Importing this package also registers
Strix's custom layers, which ``keras.saving.load_model`` needs for exported models.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from shared import catalog, spaces
from shared.catalog import CATALOG, RESOURCES
from shared.errors import ConfigError
from shared.models import acosta, baseline, convstrix, mobilenet, simplecnn, vggstrix

log = logging.getLogger(__name__)

TRAIN_KEYS = catalog.TRAIN_KEYS  # one definition, known without Keras


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable[..., keras.Model]
    space: Callable[..., dict]
    image_size: int  # default input side in px
    channels: int  # channels the data pipeline feeds; the builders accept 1 or 3 anyway
    resource: str  # "light" or "heavy"
    min_size: int  # smallest side the model can take
    weights_file: str | None = None  # the local ImageNet file to look for, if pretrained
    base_layer: str | None = None  # the frozen base whose outputs shared.data.features caches


BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "convstrix": convstrix.build,
    "vggstrix": vggstrix.build,
    "baseline": baseline.build,
    "simplecnn": simplecnn.build,
    "mobilenet": mobilenet.build,
    "mobilenet_lite": mobilenet.build_lite,
    "acosta": acosta.build,
}
MODELS: dict[str, ModelInfo] = {
    name: ModelInfo(builder=BUILDERS[name], space=spaces.SPACES[name], **vars(e))
    for name, e in CATALOG.items()
}


def get_model(name: str) -> ModelInfo:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}"
        ) from None


def with_resource(name: str, resource: str) -> ModelInfo:
    """``name``'s info with another resource class (e.g. a small VGGStrix as "light")."""
    if resource not in RESOURCES:
        raise ConfigError(f"resource={resource!r}; expected one of: {', '.join(RESOURCES)}")
    return dataclasses.replace(get_model(name), resource=resource)


def default_weights(name: str, weights_dir: str | Path | None = None) -> str | None:
    """What to pass as ``weights``: the model's file in ``weights_dir`` when it is there,
    else "imagenet" (a download); None for models without a pretrained backbone. Offline
    GPU hosts only have the local file.
    """
    info = get_model(name)
    if info.weights_file is None:
        return None
    folder = weights_dir
    if folder and (Path(folder) / info.weights_file).is_file():
        return str(Path(folder) / info.weights_file)
    return "imagenet"


def _coerce(params: dict[str, Any], signature: inspect.Signature, name: str) -> dict:
    """Drop training keys, refuse unknown ones, turn integral floats into ints."""
    accepted = {k for k in signature.parameters if k not in ("input_shape", "weights")}
    kwargs: dict[str, Any] = {}
    for key, value in params.items():
        if key in TRAIN_KEYS:
            continue
        if key not in accepted:
            raise ConfigError(
                f"{name}: unknown parameter {key!r}; it takes {', '.join(sorted(accepted))} "
                f"(plus the training keys {', '.join(sorted(TRAIN_KEYS))})"
            )
        is_int = signature.parameters[key].annotation == "int"
        kwargs[key] = _as_int(name, key, value) if is_int else value
    return kwargs


def _as_int(name: str, key: str, value: Any) -> Any:
    """hyperopt and BSON hand back 3.0 for 3; 2.5 for an int parameter is a mistake."""
    if isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(f"{name}: {key}={value!r}; expected a whole number")
        return int(value)
    return value


def build_model(
    name: str,
    params: dict,
    *,
    image_size: int,
    channels: int | None = None,
    weights: str | None = "imagenet",
) -> keras.Model:
    """Build model ``name`` for one trial's (possibly nested) hyperopt parameters.

    ``weights`` goes only to pretrained models: "imagenet", None (random init, tests) or
    a local .h5 path.
    """
    info = get_model(name)
    signature = inspect.signature(info.builder)
    kwargs = _coerce(spaces.flatten(params), signature, name)
    if "weights" in signature.parameters:
        kwargs["weights"] = weights
    size = int(image_size)
    shape = (size, size, int(channels if channels is not None else info.channels))
    log.debug("building %s at %s with %s", name, shape, kwargs)
    return info.builder(input_shape=shape, **kwargs)
