"""The models Strix knows, as plain facts: no TensorFlow, no hyperopt.

Commands read this table to list models in ``--help`` and to refuse a bad model/size
pair in milliseconds, before anything heavy is imported. ``shared.models`` joins each
entry with its Keras builder and ``shared.spaces`` with its search space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shared.errors import ConfigError

VGG19_WEIGHTS = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
MOBILENET_V2_WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
RESOURCES = ("light", "heavy")
CONVSTRIX_MAX_BLOCKS = 6  # the seed's deepest ConvStrix (needs >= 32 px)


@dataclass(frozen=True)
class Entry:
    name: str
    image_size: int  # default input side in px
    channels: int  # channels the data pipeline feeds; the builders accept 1 or 3 anyway
    resource: str  # "light" models share a GPU, a "heavy" one takes it whole
    min_size: int  # smallest side the model can take
    weights_file: str | None = None  # the local ImageNet file to look for, if pretrained
    base_layer: str | None = None  # a frozen base, cacheable (shared.data.features)


# Default sizes follow the sources: 128 px for the Strix models (seed Part I up-sizes to
# 128 so depth is not capped), 56 px for MobileNet (the paper's up-scaling), the native
# 28 px otherwise. The ImageNet models are fed 3 channels; they also take 1 and repeat it.
# MobileNetV2 itself refuses < 32 px; 56 is the paper's size; three 2x2 pools need 8 px.
CATALOG: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry("convstrix", 128, 1, "light", 1),
        Entry("vggstrix", 128, 3, "heavy", 32, VGG19_WEIGHTS, base_layer="vgg19"),
        Entry("baseline", 28, 1, "light", 1),
        Entry("simplecnn", 28, 1, "light", 8),
        Entry("mobilenet", 56, 3, "light", 56, MOBILENET_V2_WEIGHTS, base_layer="mobilenetv2"),
        Entry("mobilenet_lite", 56, 3, "light", 32, MOBILENET_V2_WEIGHTS, "mobilenetv2_lite"),
        Entry("acosta", 28, 1, "light", 2),
    )
}
NAMES = tuple(sorted(CATALOG))

# What ``strix train --set`` and a trial's params may name, known without importing Keras:
# the builders' keyword arguments (a test keeps this equal to their signatures) and the
# training keys every model takes.
TRAIN_KEYS = frozenset({"batch_size", "learning_rate", "lr_decay", "optimizer"})
_AUG = ("aug_crop", "aug_flip", "aug_rotate")
_FCL = ("fcl_num_layers", "fcl_layer_size", "fcl_dropout_rate", "activation")
_MOBILENET = ("dropout_rate", *_AUG, "freeze_base")
PARAMS: dict[str, tuple[str, ...]] = {
    "convstrix": ("num_blocks", "block_size", *_FCL, *_AUG),
    "vggstrix": ("num_blocks", "block_size", *_FCL, *_AUG),
    "baseline": (*_FCL, *_AUG),
    "simplecnn": ("dropout_rate", "dense_units", "activation", *_AUG),
    "mobilenet": _MOBILENET,
    "mobilenet_lite": _MOBILENET,
    "acosta": ("num_conv_layers", "filters", "pooling", "hidden_units", "dropout_rate", *_AUG),
}


def entry(name: str) -> Entry:
    try:
        return CATALOG[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(NAMES)}") from None


def check_params(name: str, keys: list[str] | set[str], flag: str = "--set") -> None:
    """Refuse a parameter the model does not take, naming the closest and all it takes."""
    import difflib

    known = {"num_classes", *PARAMS[entry(name).name], *TRAIN_KEYS}
    for key in keys:
        if key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(
            f"{flag} {key}=...: {name} has no parameter {key!r}{hint}; it takes "
            f"{', '.join(sorted(known - {'num_classes'}))}"
        )


def check_size(name: str, size: int) -> None:
    e = entry(name)
    if size < e.min_size:
        raise ConfigError(
            f"--image-size {size} is too small for {name}; it needs at least {e.min_size}"
        )


def max_blocks(image_size: int) -> int:
    """Deepest ConvStrix for a side of ``image_size`` px: n blocks pool n-1 times by 2."""
    if int(image_size) < 1:
        raise ConfigError(f"image_size={image_size!r}; expected a positive number of pixels")
    return math.floor(math.log2(int(image_size))) + 1
