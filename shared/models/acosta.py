"""The CNN of Sánchez Acosta & Keith, "The relevance of hyper-parameters in CNNs: a case
study with Fashion-MNIST".

One or two 5x5 convolutions (ReLU, the same number of filters in each), each followed by
2x2 pooling (average in the paper, max tested afterwards), then one hidden dense layer
with dropout and the softmax. The paper does not state the padding; we use "same" (the
TensorFlow tutorial layout of that time), so 28 px leaves 14x14 or 7x7 maps. Defaults are
the paper's best: one layer of 64 filters, average pooling, 1024 hidden units, dropout 0.2.
"""

from __future__ import annotations

import keras

from shared.errors import ModelError
from shared.models._head import (
    check_choice,
    check_positive,
    check_rate,
    check_shape,
    flat_head_model,
    rescaled_input,
)

NAME = "acosta"
POOLS = {"avg": keras.layers.AveragePooling2D, "max": keras.layers.MaxPooling2D}


def _check_layers(num_conv_layers: int, side: int) -> None:
    if num_conv_layers not in (1, 2):
        raise ModelError(f"{NAME}: num_conv_layers={num_conv_layers!r}; expected 1 or 2")
    if side < 2**num_conv_layers:
        raise ModelError(
            f"{NAME}: {num_conv_layers} pools need at least {2**num_conv_layers} px, got "
            f"{side}; use a larger --image-size"
        )


def build(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int = 10,
    num_conv_layers: int = 1,
    filters: int = 64,
    pooling: str = "avg",
    hidden_units: int = 1024,
    dropout_rate: float = 0.2,
    aug_crop: float = 0.0,
    aug_flip: float = 0.0,
    aug_rotate: float = 0.0,
) -> keras.Model:
    """The paper's network for one point of its hyper-parameter grid."""
    check_shape(input_shape, min_size=1, model=NAME)
    _check_layers(num_conv_layers, min(input_shape[0], input_shape[1]))
    check_positive(NAME, filters=filters, hidden_units=hidden_units)
    check_choice(NAME, "pooling", pooling, tuple(POOLS))
    check_rate(NAME, "dropout_rate", dropout_rate)
    inputs, x = rescaled_input(input_shape, crop=aug_crop, flip=aug_flip, rotate=aug_rotate)
    for i in range(1, num_conv_layers + 1):
        x = keras.layers.Conv2D(
            int(filters), 5, padding="same", activation="relu", name=f"conv{i}"
        )(x)
        x = POOLS[pooling](2, name=f"pool{i}")(x)
    # the paper's head is the shared dense head with one ReLU layer
    return flat_head_model(inputs, x, NAME, (1, hidden_units, dropout_rate), "relu", num_classes)
