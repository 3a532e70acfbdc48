"""The simple CNN of "Training convolutional neural networks on Fashion-MNIST", Table 1.

Three blocks of two 3x3 convolutions (16,16 / 32,32 / 32,32), each ending in a 2x2
max-pool, then dropout, a dense layer of 128 and the softmax. Padding is "same": Table 1
keeps 28x28 through the first block and 14x14, 7x7 through the next, and pooling 7 -> 3
gives the table's Flatten of 3x3x32 = 288 and its 73K parameters (73,146 exactly).
The filter counts are the paper's result and stay fixed; the head is tunable.
"""

from __future__ import annotations

import keras

from shared.catalog import CATALOG
from shared.models._head import (
    ACTIVATIONS,
    check_choice,
    check_positive,
    check_rate,
    check_shape,
    classifier,
    rescaled_input,
)

NAME = "simplecnn"
FILTERS = ((16, 16), (32, 32), (32, 32))
MIN_SIZE = CATALOG["simplecnn"].min_size


def build(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int = 10,
    dropout_rate: float = 0.5,
    dense_units: int = 128,
    activation: str = "relu",
    aug_crop: float = 0.0,
    aug_flip: float = 0.0,
    aug_rotate: float = 0.0,
) -> keras.Model:
    """The paper's network; its defaults are the paper's choices."""
    check_shape(input_shape, min_size=MIN_SIZE, model=NAME)
    check_rate(NAME, "dropout_rate", dropout_rate)
    check_positive(NAME, dense_units=dense_units)
    check_choice(NAME, "activation", activation, ACTIVATIONS)
    inputs, x = rescaled_input(input_shape, crop=aug_crop, flip=aug_flip, rotate=aug_rotate)
    for i, block in enumerate(FILTERS, start=1):
        for j, filters in enumerate(block, start=1):
            x = keras.layers.Conv2D(
                filters, 3, padding="same", activation=activation, name=f"block{i}_conv{j}"
            )(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(float(dropout_rate), name="dropout")(x)
    x = keras.layers.Dense(int(dense_units), activation=activation, name="fc1")(x)
    return keras.Model(inputs, classifier(x, num_classes), name=NAME)
