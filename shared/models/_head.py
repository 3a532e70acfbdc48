"""Pieces every Strix model shares: the input/augmentation head and the dense head.

Models take raw 0..255 pixels (float32 tensor, uint8 values) so the stored uint8 cache is
fed as is and an exported model is used without any preprocessing by its consumer. The
head is: input -> optional augmentation (on raw pixels, so its zero fill is black) ->
the model's own scaling (``Rescaling(1/255)``, VGG's caffe means, MobileNet's [-1, 1]).
The custom layers here are registered so a saved ``.keras`` model reloads after
``import shared.models``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
from keras import ops

from shared.catalog import CATALOG
from shared.data.augment import augmentation_layers
from shared.errors import ModelError

ACTIVATIONS = ("relu", "selu", "tanh", "elu", "gelu", "swish", "sigmoid", "linear")
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)  # keras.applications.vgg19 "caffe" mode


@keras.saving.register_keras_serializable(package="strix")
class GrayToRgb(keras.layers.Layer):
    """Repeat a single grey channel to three, for ImageNet backbones; 3 channels pass."""

    def call(self, inputs: Any) -> Any:
        if inputs.shape[-1] == 3:
            return inputs
        return ops.repeat(inputs, 3, axis=-1)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], 3)


@keras.saving.register_keras_serializable(package="strix")
class CaffePreprocess(keras.layers.Layer):
    """``vgg19.preprocess_input`` as a layer: RGB -> BGR, minus the ImageNet means.

    A layer rather than a Lambda so the model saves and reloads without unsafe
    deserialisation.
    """

    def call(self, inputs: Any) -> Any:
        bgr = ops.flip(inputs, axis=-1)
        return bgr - ops.convert_to_tensor(IMAGENET_BGR_MEAN, dtype=inputs.dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


def check_shape(input_shape: tuple[int, int, int], *, min_size: int, model: str) -> None:
    """Refuse shapes the model cannot take, with the fix in the message."""
    if len(input_shape) != 3 or input_shape[2] not in (1, 3):
        raise ModelError(
            f"{model}: input_shape={input_shape!r}; expected (height, width, channels) with "
            "1 (grey) or 3 (RGB) channels"
        )
    if min(input_shape[:2]) < min_size:
        raise ModelError(
            f"{model} needs images of at least {min_size}x{min_size} px, got "
            f"{input_shape[0]}x{input_shape[1]}; use --image-size {min_size} or larger"
        )


def check_positive(model: str, **values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise ModelError(f"{model}: {name}={value!r}; expected an integer >= 1")


def check_choice(model: str, name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ModelError(f"{model}: {name}={value!r}; expected one of {', '.join(options)}")


def check_rate(model: str, name: str, value: float) -> None:
    if not 0.0 <= float(value) < 1.0:
        raise ModelError(f"{model}: {name}={value!r}; expected a dropout rate in [0, 1)")


def image_input(
    input_shape: tuple[int, int, int], *, crop: float, flip: float, rotate: float
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The model input and the (optionally augmented) raw-pixel tensor after it."""
    inputs = keras.Input(shape=tuple(int(d) for d in input_shape), name="image")
    x = inputs
    for layer in augmentation_layers(crop=crop, flip=flip, rotate=rotate):
        x = layer(x)
    return inputs, x


def rescaled_input(
    input_shape: tuple[int, int, int], *, crop: float, flip: float, rotate: float
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """:func:`image_input` scaled to [0, 1]: the scaling of every model trained from
    scratch (the pretrained backbones expect their own, so they call ``image_input``)."""
    inputs, x = image_input(input_shape, crop=crop, flip=flip, rotate=rotate)
    return inputs, keras.layers.Rescaling(1.0 / 255, name="rescale")(x)


def dense_head(
    x: keras.KerasTensor,
    fcl: tuple[int, int, float],
    *,
    activation: str,
    num_classes: int,
    model: str,
) -> keras.KerasTensor:
    """``fcl`` = (layers, size, dropout): that many Dense + Dropout, then the softmax; the
    seeds' fully connected block."""
    num_layers, layer_size, dropout_rate = fcl
    if num_layers < 0:
        raise ModelError(f"{model}: fcl_num_layers={num_layers!r}; expected an integer >= 0")
    check_positive(model, fcl_layer_size=layer_size, num_classes=num_classes)
    check_rate(model, "fcl_dropout_rate", dropout_rate)
    check_choice(model, "activation", activation, ACTIVATIONS)
    for i in range(1, num_layers + 1):
        x = keras.layers.Dense(int(layer_size), activation=activation, name=f"fc{i}")(x)
        x = keras.layers.Dropout(float(dropout_rate), name=f"fc{i}_dropout")(x)
    return classifier(x, num_classes)


def flat_head_model(
    inputs: keras.KerasTensor,
    x: keras.KerasTensor,
    name: str,
    fcl: tuple[int, int, float],
    activation: str,
    num_classes: int,
) -> keras.Model:
    """Flatten, the dense head (``fcl`` = layers, size, dropout), the model: how every
    builder whose features end in a feature map finishes."""
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = dense_head(x, fcl, activation=activation, num_classes=num_classes, model=name)
    return keras.Model(inputs, outputs, name=name)


def classifier(x: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    """The softmax stays float32 under a mixed-precision policy: its probabilities and
    the loss on them need the range, as Keras's mixed-precision guide advises."""
    return keras.layers.Dense(
        int(num_classes), activation="softmax", name="predictions", dtype="float32"
    )(x)


def backbone_weights(weights: str | None, model: str) -> str | None:
    """Validate a weights argument: "imagenet", None (random) or an existing local file."""
    if weights in (None, "imagenet"):
        return weights
    if not Path(weights).is_file():
        raise ModelError(
            f"{model}: weights file {weights!r} does not exist; pass an existing .h5 path, "
            '"imagenet" (downloads) or None (random init)'
        )
    return str(weights)


def load_backbone(
    application: Callable[..., keras.Model],
    model: str,
    weights: str | None,
    side: tuple[int, int],
    **kwargs: Any,
) -> keras.Model:
    """``application`` (a ``keras.applications`` constructor) without its top, for RGB
    images of ``side`` = (height, width).

    Download and .h5 errors come as bare Exceptions; they become a ModelError that names
    the catalog's local weights file, so every pretrained model says how to run offline.
    """
    try:
        return application(include_top=False, weights=weights, input_shape=(*side, 3), **kwargs)
    except Exception as exc:
        raise ModelError(
            f"{model}: cannot load {application.__name__} weights {weights!r} ({exc}); on an "
            f"offline machine put {CATALOG[model].weights_file} in $STRIX_WEIGHTS_DIR"
        ) from exc
