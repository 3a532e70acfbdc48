"""ConvStrix: the seed's VGG-inspired network trained from scratch (guidj, Part III).

``num_blocks`` blocks of ``block_size`` 3x3 convolutions (same padding), with 32, 64, 96...
filters (32 x block number). Every block but the last ends with batch normalisation and
then 2x2 max-pooling; a Flatten and the shared dense head follow. Only the pools shrink
the image, so depth is bounded by the input size: see :func:`max_blocks`.
"""

from __future__ import annotations

import keras

from shared.errors import ModelError
from shared.models._head import (
    ACTIVATIONS,
    check_choice,
    check_positive,
    check_shape,
    flat_head_model,
    rescaled_input,
)
from shared.spaces import max_blocks

__all__ = ["build", "max_blocks"]

NAME = "convstrix"
BASE_FILTERS = 32


def _check_depth(num_blocks: int, height: int, width: int) -> None:
    side = min(height, width)
    if num_blocks > max_blocks(side):
        raise ModelError(
            f"num_blocks={num_blocks} pools a {height}x{width} image below 1x1; for {side} px "
            f"use num_blocks in 1..{max_blocks(side)} (or a larger --image-size)"
        )


def _block(x: keras.KerasTensor, index: int, size: int, activation: str, last: bool):
    filters = BASE_FILTERS * index
    for j in range(1, size + 1):
        x = keras.layers.Conv2D(
            filters, 3, padding="same", activation=activation, name=f"block{index}_conv{j}"
        )(x)
    if not last:
        x = keras.layers.BatchNormalization(name=f"block{index}_bn")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{index}_pool")(x)
    return x


def build(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int = 10,
    num_blocks: int = 4,
    block_size: int = 1,
    fcl_num_layers: int = 1,
    fcl_layer_size: int = 1024,
    fcl_dropout_rate: float = 0.25,
    activation: str = "relu",
    aug_crop: float = 0.0,
    aug_flip: float = 0.0,
    aug_rotate: float = 0.0,
) -> keras.Model:
    """A ConvStrix for ``input_shape``; ModelError when the parameters cannot fit it."""
    check_shape(input_shape, min_size=1, model=NAME)
    check_positive(NAME, num_blocks=num_blocks, block_size=block_size)
    check_choice(NAME, "activation", activation, ACTIVATIONS)
    _check_depth(num_blocks, input_shape[0], input_shape[1])
    inputs, x = rescaled_input(input_shape, crop=aug_crop, flip=aug_flip, rotate=aug_rotate)
    for i in range(1, num_blocks + 1):
        x = _block(x, i, block_size, activation, last=i == num_blocks)
    fcl = (fcl_num_layers, fcl_layer_size, fcl_dropout_rate)
    return flat_head_model(inputs, x, NAME, fcl, activation, num_classes)
