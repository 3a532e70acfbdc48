"""Probabilistic data augmentation that lives inside the network (seed: "Data Crunch").

The offline pipeline only resizes and stores uint8 images; enhancement happens at run time
in layers stacked at the head of the model, so no augmented copies are ever written and an
exported model needs no separate preprocessing. Each layer transforms an image only with
its own probability, drawn per image and per step: over several epochs most images are
seen transformed at least once, while every batch still holds originals.

The layers are active only when called with ``training=True`` (``fit``); in inference
(``predict``/``evaluate``) they return their input unchanged. They work on any value range
and fill uncovered pixels with 0, so models place them on the raw 0..255 pixels, before any
scaling, where 0 is the black Fashion-MNIST background whatever the model's preprocessing.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from shared.errors import ModelError

ROTATE_FACTOR = 0.05  # max rotation as a fraction of a full turn (Keras' convention): +-18 deg
CROP_PAD = 0.1  # padding before cropping back, as a fraction of the image side


def _check_probability(name: str, value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ModelError(
            f"{name}={value!r} is not a probability; use a value in 0..1 (0 switches it off)"
        )
    return float(value)


class _PerImage(keras.layers.Layer):
    """Shared part: the per-image coin flip and the training-only switch."""

    xla = True  # whether the transform compiles with XLA

    def __init__(self, probability: float = 0.5, seed: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.probability = _check_probability(f"{type(self).__name__} probability", probability)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True
        self.supports_jit = self.xla

    def _chosen(self, images: Any) -> Any:
        """A (batch,) boolean mask: which images this step transforms."""
        batch = ops.shape(images)[0]
        draw = keras.random.uniform((batch,), seed=self.seed_generator)
        return ops.less(draw, self.probability)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if not training or self.probability == 0.0:
            return inputs
        chosen = self._chosen(inputs)
        transformed = self._transform(inputs)
        return ops.where(ops.reshape(chosen, (-1, 1, 1, 1)), transformed, inputs)

    def _transform(self, images: Any) -> Any:
        raise NotImplementedError

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "probability": self.probability, "seed": self.seed}


@keras.saving.register_keras_serializable(package="strix")
class RandomPadCrop(_PerImage):
    """Pad with zeros by ``pad_fraction`` of the side, then crop back at a random offset.

    Implemented as the equivalent integer translation in -pad..pad with zero fill and
    nearest-neighbour sampling, so pixels are moved, never interpolated.
    """

    # XLA has no kernel for ImageProjectiveTransformV3: tell Keras, whose jit_compile="auto"
    # on GPUs then compiles without XLA instead of failing (as for keras.layers.RandomRotation).
    xla = False

    def __init__(self, probability: float = 0.5, pad_fraction: float = CROP_PAD, **kwargs: Any):
        super().__init__(probability, **kwargs)
        if not 0.0 < float(pad_fraction) < 1.0:
            raise ModelError(f"crop_pad={pad_fraction!r}: use a fraction of the side in (0, 1)")
        self.pad_fraction = float(pad_fraction)

    def _transform(self, images: Any) -> Any:
        height, width = images.shape[1], images.shape[2]
        pad_y = max(1, round(self.pad_fraction * height))
        pad_x = max(1, round(self.pad_fraction * width))
        batch = ops.shape(images)[0]
        shift = keras.random.uniform((batch, 2), minval=0.0, maxval=1.0, seed=self.seed_generator)
        dx = ops.floor(shift[:, 0] * (2 * pad_x + 1)) - pad_x
        dy = ops.floor(shift[:, 1] * (2 * pad_y + 1)) - pad_y
        one, zero = ops.ones_like(dx), ops.zeros_like(dx)
        transform = ops.stack([one, zero, dx, zero, one, dy, zero, zero], axis=1)
        return ops.image.affine_transform(
            images, transform, interpolation="nearest", fill_mode="constant", fill_value=0
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "pad_fraction": self.pad_fraction}


@keras.saving.register_keras_serializable(package="strix")
class RandomHorizontalFlip(_PerImage):
    """Mirror left-right: garments are (nearly) symmetric, their class is not."""

    def _transform(self, images: Any) -> Any:
        return ops.flip(images, axis=2)


@keras.saving.register_keras_serializable(package="strix")
class RandomSmallRotation(_PerImage):
    """Rotate about the centre by a uniform angle in +-``factor`` of a full turn."""

    xla = False  # see RandomPadCrop

    def __init__(self, probability: float = 0.5, factor: float = ROTATE_FACTOR, **kwargs: Any):
        super().__init__(probability, **kwargs)
        if not 0.0 < float(factor) <= 0.5:
            raise ModelError(f"rotate_factor={factor!r}: use a fraction of a full turn in (0, 0.5]")
        self.factor = float(factor)

    def _transform(self, images: Any) -> Any:
        height, width = images.shape[1], images.shape[2]
        batch = ops.shape(images)[0]
        limit = self.factor * 2.0 * math.pi
        angle = keras.random.uniform(
            (batch,), minval=-limit, maxval=limit, seed=self.seed_generator
        )
        cos, sin = ops.cos(angle), ops.sin(angle)
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        zero = ops.zeros_like(cos)
        transform = ops.stack(
            [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, zero, zero],
            axis=1,
        )
        return ops.image.affine_transform(
            images, transform, interpolation="bilinear", fill_mode="constant", fill_value=0
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "factor": self.factor}


def augmentation_layers(
    *,
    crop: float = 0.0,
    flip: float = 0.0,
    rotate: float = 0.0,
    rotate_factor: float = ROTATE_FACTOR,
    crop_pad: float = CROP_PAD,
    seed: int | None = None,
) -> list[keras.layers.Layer]:
    """The augmentation head for the given per-image probabilities; 0 leaves a layer out.

    Leaving switched-off layers out (rather than adding no-op layers) keeps a model without
    augmentation byte-for-byte the plain architecture of the seeds.
    """
    probs = {
        "crop": _check_probability("aug_crop", crop),
        "flip": _check_probability("aug_flip", flip),
        "rotate": _check_probability("aug_rotate", rotate),
    }
    seeds = {k: None if seed is None else seed + i for i, k in enumerate(probs)}
    layers: list[keras.layers.Layer] = []
    if probs["crop"] > 0:
        layers.append(RandomPadCrop(probs["crop"], crop_pad, seed=seeds["crop"], name="aug_crop"))
    if probs["flip"] > 0:
        layers.append(RandomHorizontalFlip(probs["flip"], seed=seeds["flip"], name="aug_flip"))
    if probs["rotate"] > 0:
        layers.append(
            RandomSmallRotation(
                probs["rotate"], rotate_factor, seed=seeds["rotate"], name="aug_rotate"
            )
        )
    return layers
