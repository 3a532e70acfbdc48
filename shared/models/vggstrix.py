"""VGGStrix: ConvStrix whose first "block" is the whole frozen VGG19 (guidj, Part III).

Grey input is repeated to three channels and VGG19's own caffe preprocessing (RGB->BGR,
minus the ImageNet means) runs inside the model, so the exported model takes raw pixels.
VGG19 is frozen (the seed added blocks rather than unfreezing it). Then ``num_blocks``
extra blocks of ``block_size`` 3x3 convs with 512 filters, VGG19's last width (the seed
added blocks to shrink the output, not to widen it). As in ConvStrix every extra block
but the last ends with BN and a 2x2 max-pool, except that the pool is skipped when the
map is already 1x1: VGG19 divides the side by 32, so at 32 px its output is 1x1 and at
128 px 4x4, which is where the seed's "three times to be exact" comes from.
"""

from __future__ import annotations

import keras

from shared.catalog import CATALOG
from shared.errors import ModelError
from shared.models._head import (
    ACTIVATIONS,
    CaffePreprocess,
    GrayToRgb,
    backbone_weights,
    check_choice,
    check_shape,
    flat_head_model,
    image_input,
    load_backbone,
)

NAME = "vggstrix"
MIN_SIZE = CATALOG["vggstrix"].min_size
FILTERS = 512


def _vgg19(height: int, width: int, weights: str | None) -> keras.Model:
    base = load_backbone(keras.applications.VGG19, NAME, weights, (height, width))
    base.trainable = False
    return base


def _extra_blocks(x: keras.KerasTensor, num_blocks: int, block_size: int, activation: str):
    for i in range(1, num_blocks + 1):
        for j in range(1, block_size + 1):
            x = keras.layers.Conv2D(
                FILTERS, 3, padding="same", activation=activation, name=f"extra{i}_conv{j}"
            )(x)
        if i < num_blocks:
            x = keras.layers.BatchNormalization(name=f"extra{i}_bn")(x)
            if min(x.shape[1], x.shape[2]) >= 2:
                x = keras.layers.MaxPooling2D(2, name=f"extra{i}_pool")(x)
    return x


def _check_blocks(num_blocks: int, block_size: int) -> None:
    if num_blocks < 0 or (num_blocks > 0 and block_size < 1):
        raise ModelError(
            f"{NAME}: num_blocks={num_blocks}, block_size={block_size}; expected num_blocks "
            ">= 0 and block_size >= 1 when there are blocks"
        )


def build(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int = 10,
    num_blocks: int = 0,
    block_size: int = 0,
    fcl_num_layers: int = 1,
    fcl_layer_size: int = 1024,
    fcl_dropout_rate: float = 0.25,
    activation: str = "relu",
    weights: str | None = "imagenet",
    aug_crop: float = 0.0,
    aug_flip: float = 0.0,
    aug_rotate: float = 0.0,
) -> keras.Model:
    """A VGGStrix; ``weights`` is "imagenet", None (random) or a local no-top .h5 path."""
    check_shape(input_shape, min_size=MIN_SIZE, model=NAME)
    _check_blocks(num_blocks, block_size)
    check_choice(NAME, "activation", activation, ACTIVATIONS)
    weights = backbone_weights(weights, NAME)
    height, width = int(input_shape[0]), int(input_shape[1])
    inputs, x = image_input(input_shape, crop=aug_crop, flip=aug_flip, rotate=aug_rotate)
    x = GrayToRgb(name="to_rgb")(x)
    x = CaffePreprocess(name="vgg_preprocess")(x)
    x = _vgg19(height, width, weights)(x, training=False)
    x = _extra_blocks(x, num_blocks, block_size, activation)
    fcl = (fcl_num_layers, fcl_layer_size, fcl_dropout_rate)
    return flat_head_model(inputs, x, NAME, fcl, activation, num_classes)
