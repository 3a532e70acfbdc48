"""MobileNet transfer learning and its reduced version ("Training CNNs on Fashion-MNIST").

The paper fine-tunes ImageNet MobileNet (v1, all 3.2M parameters trained) on images
up-scaled to 56x56, with global average pooling, dropout and softmax on top. We use
MobileNetV2 (alpha 1.0), whose ImageNet weights we have locally (v1's we do not); grey
input is repeated to 3 channels and scaled to [-1, 1] inside the model. With pretrained
weights the backbone's batch norms run in inference mode (their ImageNet statistics are
kept while everything else is fine-tuned); with ``weights=None`` they train normally.
``freeze_base=True`` keeps the whole backbone frozen instead, so only the head trains and
the backbone's outputs can be computed once (``shared.data.features``).

``mobilenet_lite`` is the paper's "simplified MobileNet": keep the layers up to the 5th
depthwise convolution, then pooling, dropout, softmax. In MobileNetV2 the depthwise convs
are ``expanded_conv_depthwise`` (1st), ``block_1_depthwise`` ... so the 5th is
``block_4_depthwise``. The paper's 140K parameters equal v1 up to ``conv_pw_5`` (the
pointwise conv after its 5th depthwise, 137,152) plus a 256->10 softmax, i.e. it kept the
5th depthwise-separable block whole; we likewise keep V2's 5th inverted-residual block
whole and cut at ``block_4_add`` (32 channels at 1/8 resolution). That gives 43,328 + 330 =
43,658 parameters, about a third of the paper's: V2's blocks are bottlenecks (32 channels
where v1 has 256 at that depth, the wide part being a 192-channel depthwise in between).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import keras

from shared.catalog import CATALOG
from shared.models._head import (
    GrayToRgb,
    backbone_weights,
    check_rate,
    check_shape,
    classifier,
    image_input,
    load_backbone,
)

MIN_SIZE = CATALOG["mobilenet"].min_size
LITE_MIN_SIZE = CATALOG["mobilenet_lite"].min_size
LITE_CUT = "block_4_add"
WEIGHTS_FILE = CATALOG["mobilenet"].weights_file  # public: where the tests find the local file


class _Variant(NamedTuple):
    """What tells the two builders apart."""

    name: str
    min_size: int
    lite: bool  # cut the backbone at LITE_CUT


def _backbone(height: int, width: int, weights: str | None, name: str) -> keras.Model:
    return load_backbone(keras.applications.MobileNetV2, name, weights, (height, width), alpha=1.0)


def _build(
    variant: _Variant,
    input_shape: tuple[int, int, int],
    *,
    num_classes: int,
    dropout_rate: float,
    weights: str | None,
    aug: tuple[float, float, float],
    freeze_base: bool = False,
) -> keras.Model:
    name, min_size, lite = variant
    check_shape(input_shape, min_size=min_size, model=name)
    check_rate(name, "dropout_rate", dropout_rate)
    weights = backbone_weights(weights, name)
    base = _backbone(int(input_shape[0]), int(input_shape[1]), weights, name)
    cut = base.get_layer(LITE_CUT).output if lite else base.output
    base = keras.Model(base.input, cut, name="mobilenetv2_lite" if lite else "mobilenetv2")
    base.trainable = not freeze_base
    inputs, x = image_input(input_shape, crop=aug[0], flip=aug[1], rotate=aug[2])
    x = GrayToRgb(name="to_rgb")(x)
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(x)
    x = base(x, training=False) if weights is not None or freeze_base else base(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(float(dropout_rate), name="dropout")(x)
    return keras.Model(inputs, classifier(x, num_classes), name=name)


def _variant(variant: _Variant, doc: str) -> Callable[..., keras.Model]:
    """One public builder per variant, each with the flat keyword signature the model
    registry reads (the two differ only in where the backbone is cut)."""

    def build(
        *,
        input_shape: tuple[int, int, int],
        num_classes: int = 10,
        dropout_rate: float = 0.2,
        weights: str | None = "imagenet",
        aug_crop: float = 0.0,
        aug_flip: float = 0.0,
        aug_rotate: float = 0.0,
        freeze_base: bool = False,
    ) -> keras.Model:
        return _build(
            variant,
            input_shape,
            num_classes=num_classes,
            dropout_rate=dropout_rate,
            weights=weights,
            aug=(aug_crop, aug_flip, aug_rotate),
            freeze_base=bool(freeze_base),
        )

    build.__doc__ = doc
    return build


build = _variant(
    _Variant("mobilenet", MIN_SIZE, lite=False), "Full MobileNetV2 transfer model (>= 56 px)."
)
build_lite = _variant(
    _Variant("mobilenet_lite", LITE_MIN_SIZE, lite=True),
    "MobileNetV2 cut after its 5th inverted-residual block.",
)
