"""The fully connected baseline of the seed series (guidj, Part II).

The flattened, rescaled image goes straight into the shared dense head: it is the yardstick
the convolutional models are measured against (the seed reports ~85% test accuracy).
"""

from __future__ import annotations

import keras

from shared.models._head import check_shape, flat_head_model, rescaled_input

NAME = "baseline"


def build(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int = 10,
    fcl_num_layers: int = 2,
    fcl_layer_size: int = 512,
    fcl_dropout_rate: float = 0.2,
    activation: str = "relu",
    aug_crop: float = 0.0,
    aug_flip: float = 0.0,
    aug_rotate: float = 0.0,
) -> keras.Model:
    """A multi-layer perceptron on the raw image."""
    check_shape(input_shape, min_size=1, model=NAME)
    inputs, x = rescaled_input(input_shape, crop=aug_crop, flip=aug_flip, rotate=aug_rotate)
    fcl = (fcl_num_layers, fcl_layer_size, fcl_dropout_rate)
    return flat_head_model(inputs, x, NAME, fcl, activation, num_classes)
