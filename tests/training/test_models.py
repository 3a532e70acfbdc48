"""Model builders, augmentation layers and the registry, with real TensorFlow."""

from __future__ import annotations

import os
import time
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from shared import spaces
from shared.data.augment import augmentation_layers
from shared.errors import ConfigError, ModelError
from shared.models import (
    MODELS,
    TRAIN_KEYS,
    build_model,
    convstrix,
    default_weights,
    get_model,
    mobilenet,
    with_resource,
)
from shared.models._head import CaffePreprocess

WEIGHTS = Path(__file__).resolve().parents[3] / "shared" / "weights" / mobilenet.WEIGHTS_FILE
SMALL = {
    "convstrix": 32,
    "vggstrix": 32,
    "baseline": 28,
    "simplecnn": 28,
    "mobilenet": 56,
    "mobilenet_lite": 56,
    "acosta": 28,
}


def images(n: int, size: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """uint8 images with a bright square on black, like a garment on its background."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, size, size, channels), dtype=np.uint8)
    lo, hi = size // 4, 3 * size // 4
    out[:, lo:hi, lo:hi, :] = rng.integers(64, 256, (n, hi - lo, hi - lo, channels))
    return out


def layer_names(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers]


# --- every model ------------------------------------------------------------------------


def test_registry_matches_spaces() -> None:
    assert set(MODELS) == set(spaces.SPACES) == set(SMALL)
    for info in MODELS.values():
        assert info.resource in ("light", "heavy")
        assert info.min_size <= info.image_size
        assert info.channels in (1, 3)
    assert get_model("vggstrix").resource == "heavy"


def test_catalog_params_are_the_builders_keywords() -> None:
    """`strix train --set` is checked against the light catalog before Keras loads; the
    catalog must name exactly what each builder takes."""
    import inspect

    from shared import catalog

    for name, info in MODELS.items():
        taken = set(inspect.signature(info.builder).parameters) - {"input_shape", "weights"}
        assert taken - {"num_classes"} == set(catalog.PARAMS[name]), name


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_model_builds_and_predicts(name: str) -> None:
    keras.backend.clear_session()
    size = SMALL[name]
    model = build_model(name, {}, image_size=size, channels=1, weights=None)
    probs = model.predict(images(3, size), verbose=0)
    assert probs.shape == (3, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert "predictions" in layer_names(model)


# --- seed architectures ---------------------------------------------------------------


def test_simplecnn_has_the_papers_73k_parameters() -> None:
    model = build_model("simplecnn", {}, image_size=28, channels=1)
    assert abs(model.count_params() - 73_000) / 73_000 < 0.02
    assert model.get_layer("flatten").output.shape[1] == 3 * 3 * 32
    assert model.get_layer("dropout").rate == 0.5
    filters = [model.get_layer(f"block{i}_conv{j}").filters for i in (1, 2, 3) for j in (1, 2)]
    assert filters == [16, 16, 32, 32, 32, 32]


def test_mobilenet_lite_is_cut_after_the_fifth_block() -> None:
    model = build_model("mobilenet_lite", {}, image_size=56, weights=None)
    base = model.get_layer("mobilenetv2_lite")
    depthwise = [x.name for x in base.layers if isinstance(x, keras.layers.DepthwiseConv2D)]
    assert depthwise[-1] == "block_4_depthwise"
    assert len(depthwise) == 5
    assert base.output.shape[1:] == (7, 7, 32)
    assert model.count_params() == 43_328 + 32 * 10 + 10


def test_mobilenet_is_the_full_v2_backbone() -> None:
    model = build_model("mobilenet", {"dropout_rate": 0.3}, image_size=56, weights=None)
    assert model.count_params() == 2_257_984 + 1280 * 10 + 10
    assert model.get_layer("dropout").rate == pytest.approx(0.3)


@pytest.mark.parametrize("name", ["mobilenet", "mobilenet_lite"])
def test_mobilenet_loads_the_local_imagenet_file(name: str) -> None:
    if not WEIGHTS.exists():
        pytest.skip(f"{WEIGHTS} not present")
    model = build_model(name, {}, image_size=56, channels=1, weights=str(WEIGHTS))
    base = model.layers[3]
    with h5py.File(WEIGHTS, "r") as f:
        group = f["Conv1"]
        stored = np.asarray(group[group.attrs["weight_names"][0]])
    np.testing.assert_array_equal(base.get_layer("Conv1").kernel.numpy(), stored)
    probs = model.predict(images(2, 56), verbose=0)
    assert probs.shape == (2, 10)


def test_convstrix_structure() -> None:
    model = convstrix.build(input_shape=(32, 32, 1), num_blocks=4, block_size=2)
    names = layer_names(model)
    for i in range(1, 5):
        for j in (1, 2):
            assert model.get_layer(f"block{i}_conv{j}").filters == 32 * i
        if i < 4:
            conv, bn, pool = (names.index(f"block{i}_{s}") for s in ("conv2", "bn", "pool"))
            assert conv < bn == pool - 1
            assert isinstance(model.get_layer(f"block{i}_bn"), keras.layers.BatchNormalization)
        else:
            assert f"block{i}_bn" not in names and f"block{i}_pool" not in names
    assert model.get_layer("flatten").output.shape[1] == 4 * 4 * 128
    assert names[:2] == ["image", "rescale"]


def test_convstrix_too_deep_names_the_valid_range() -> None:
    assert convstrix.max_blocks(16) == 5
    with pytest.raises(ModelError, match=r"num_blocks=6 .*16x16.*1\.\.5"):
        convstrix.build(input_shape=(16, 16, 1), num_blocks=6)
    deepest = convstrix.build(input_shape=(16, 16, 1), num_blocks=5)
    assert deepest.get_layer("flatten").output.shape[1] == 1 * 1 * 160


def test_vggstrix_refuses_small_images_and_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="at least 32x32"):
        build_model("vggstrix", {}, image_size=16, weights=None)
    with pytest.raises(ModelError, match="does not exist"):
        build_model("vggstrix", {}, image_size=32, weights=str(tmp_path / "nope.h5"))
    with pytest.raises(ModelError, match="at least 56x56"):
        build_model("mobilenet", {}, image_size=32, weights=None)


def test_vggstrix_extra_blocks_pool_only_while_they_can() -> None:
    conv = {"conv": {"num_blocks": 3, "block_size": 1}}
    at_128 = build_model("vggstrix", conv, image_size=128, weights=None)
    assert at_128.get_layer("vgg19").output.shape[1:3] == (4, 4)
    assert {"extra1_pool", "extra2_pool"} <= set(layer_names(at_128))
    assert at_128.get_layer("flatten").output.shape[1] == 512
    at_32 = build_model("vggstrix", conv, image_size=32, weights=None)
    assert not [n for n in layer_names(at_32) if n.endswith("_pool")]
    assert at_32.get_layer("extra1_conv1").filters == 512
    assert not at_32.get_layer("vgg19").trainable


def test_caffe_preprocess_matches_keras() -> None:
    x = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    ours = keras.ops.convert_to_numpy(CaffePreprocess()(x))
    np.testing.assert_allclose(ours, keras.applications.vgg19.preprocess_input(x.copy()), atol=1e-4)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"pooling": "median"}, "pooling"),
        ({"num_conv_layers": 3}, "num_conv_layers"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"aug_flip": 2.0}, "aug_flip"),
    ],
)
def test_bad_values_are_model_errors(params: dict, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        build_model("acosta", params, image_size=28)


# --- augmentation -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["crop", "flip", "rotate"])
def test_augmentation_changes_some_images_only_in_training(kind: str) -> None:
    (layer,) = augmentation_layers(**{kind: 0.5}, seed=7)
    x = images(64, 28, seed=1).astype("float32")
    x[:, 8:20, 4:10, :] = 255  # asymmetric, so a flip always shows
    changed = np.abs(keras.ops.convert_to_numpy(layer(x, training=True)) - x)
    n_changed = int((changed.reshape(64, -1).max(axis=1) > 0).sum())
    assert 8 < n_changed < 56, n_changed
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)


def test_crop_moves_pixels_without_interpolating() -> None:
    (layer,) = augmentation_layers(crop=1.0, crop_pad=0.1, seed=3)
    x = images(16, 28, seed=2).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    pad = 3  # round(0.1 * 28)
    for img, out in zip(x[..., 0], y[..., 0], strict=True):
        padded = np.pad(img, pad)
        windows = (padded[a : a + 28, b : b + 28] for a in range(7) for b in range(7))
        assert any(np.array_equal(w, out) for w in windows)


def test_zero_probability_adds_no_layer() -> None:
    assert augmentation_layers() == []
    model = build_model("baseline", {"aug_flip": 0.5}, image_size=28)
    assert [n for n in layer_names(model) if n.startswith("aug_")] == ["aug_flip"]


def test_augmented_model_saves_and_reloads(tmp_path: Path) -> None:
    params = {"num_blocks": 2, "aug_crop": 0.5, "aug_flip": 0.5, "aug_rotate": 0.5}
    model = build_model("convstrix", params, image_size=28)
    x = images(8, 28)
    before = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), before, atol=1e-6)
    assert layer_names(loaded)[1:4] == ["aug_crop", "aug_flip", "aug_rotate"]
    assert loaded.get_layer("aug_crop").probability == 0.5


# --- registry -----------------------------------------------------------------------


def test_build_model_flattens_casts_and_drops_training_keys() -> None:
    params = {
        "batch_size": 32.0,
        "learning_rate": 0.01,
        "optimizer": "adam",
        "conv": {"num_blocks": 2.0, "block_size": 1.0},
        "fcl_num_layers": 2.0,
        "fcl_layer_size": 512,
        "fcl_dropout_rate": 0.1,
        "activation": "selu",
    }
    model = build_model("vggstrix", params, image_size=32, channels=1, weights=None)
    assert {"extra1_conv1", "extra2_conv1", "fc2"} <= set(layer_names(model))
    assert model.get_layer("fc1").units == 512
    assert model.input_shape == (None, 32, 32, 1)
    assert {"batch_size", "learning_rate", "lr_decay", "optimizer"} == TRAIN_KEYS


def test_registry_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="convstrix"):
        get_model("resnet")
    with pytest.raises(ConfigError, match="unknown parameter 'depth'"):
        build_model("baseline", {"depth": 3}, image_size=28)
    with pytest.raises(ConfigError, match="whole number"):
        build_model("convstrix", {"num_blocks": 2.5}, image_size=28)
    with pytest.raises(ConfigError, match="light, heavy"):
        with_resource("vggstrix", "medium")
    assert with_resource("vggstrix", "light").resource == "light"
    assert get_model("vggstrix").resource == "heavy"


# --- every sampled trial builds ---------------------------------------------------------

# (model, image size, clamp, n). Every draw is constructed (no forward pass), which costs
# 0.15-0.4 s for the light models, ~0.6-1 s with VGG19 and ~1-1.5 s with MobileNetV2 on 2
# CPU cores; n keeps this sweep at ~30 s. STRIX_SWEEP_N overrides n for every space. A
# larger sweep passed while writing this (200 draws per light space, 100 unclamped
# ConvStrix, 50 VGGStrix, 20 MobileNet-lite, 10 MobileNet: 5.5 min on a loaded machine).
# Depth, the one thing that makes a draw unbuildable, is checked on 200 draws per size
# without building anything that fits in test_depth_of_200_draws.
SWEEPS = [
    ("convstrix", 16, True, 30),
    ("convstrix", 16, False, 30),
    ("baseline", 28, False, 20),
    ("simplecnn", 28, False, 20),
    ("acosta", 28, False, 20),
    ("vggstrix", 32, False, 8),
    ("mobilenet_lite", 32, False, 4),
    ("mobilenet", 56, False, 3),
]


@pytest.mark.parametrize(("name", "size", "clamp", "n"), SWEEPS)
def test_every_sampled_trial_builds(name: str, size: int, clamp: bool, n: int) -> None:
    n = int(os.environ.get("STRIX_SWEEP_N", n))
    space = spaces.SPACES[name](image_size=size, clamp=clamp, augment=True)
    start, refused = time.monotonic(), 0
    for i, params in enumerate(spaces.sample(space, rng_seed=size, n=n)):
        if i % 20 == 0:
            keras.backend.clear_session()
        try:
            build_model(name, params, image_size=size, channels=1, weights=None)
        except ModelError:
            refused += 1
            assert not clamp and params["num_blocks"] > convstrix.max_blocks(size), params
    if clamp or name != "convstrix":
        assert refused == 0
    else:
        assert refused > 0, "the unclamped seed space should reach num_blocks=6 at 16 px"
    print(f"{name}@{size} clamp={clamp}: {n} built in {time.monotonic() - start:.1f}s")


@pytest.mark.parametrize("size", [16, 24, 32, 64, 128])
def test_depth_of_200_draws(size: int) -> None:
    """Clamped draws always fit the image; unclamped ones are refused exactly when too deep."""
    clamped = spaces.sample(spaces.convstrix_space(image_size=size, clamp=True), size, 200)
    assert max(p["num_blocks"] for p in clamped) <= convstrix.max_blocks(size)
    for params in spaces.sample(spaces.convstrix_space(), size, 200):
        if params["num_blocks"] > convstrix.max_blocks(size):
            with pytest.raises(ModelError, match="below 1x1"):
                build_model("convstrix", params, image_size=size)


def test_augmented_model_trains_where_xla_is_requested() -> None:
    """GPU workers get jit_compile="auto" (XLA); crop/rotate must opt out, not crash."""
    model = build_model("simplecnn", {"aug_crop": 0.5, "aug_rotate": 0.5}, image_size=28)
    with pytest.warns(UserWarning, match="jit_compile=False"):
        model.compile("adam", "sparse_categorical_crossentropy", jit_compile=True)
    history = model.fit(images(16, 28), np.arange(16) % 10, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert model.get_layer("aug_crop").supports_jit is False
    flip = build_model("baseline", {"aug_flip": 0.5}, image_size=28)
    assert flip.get_layer("aug_flip").supports_jit is True


def test_default_weights_prefers_the_local_file(tmp_path: Path) -> None:
    assert default_weights("convstrix", tmp_path) is None
    assert default_weights("vggstrix", tmp_path) == "imagenet"
    local = tmp_path / mobilenet.WEIGHTS_FILE
    local.write_bytes(b"")
    assert default_weights("mobilenet_lite", tmp_path) == str(local)
