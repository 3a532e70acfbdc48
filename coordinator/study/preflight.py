"""What ``launch`` checks before it posts a single trial, so that a study that cannot
run fails in seconds with one line instead of after every trial failed the same way.

Two things are knowable up front: whether the pretrained weights a model needs can be
found (the file in ``--weights-dir``, Keras's download cache, or the network), and whether
every model/size pair the search space can draw can be built (ConvStrix pools its image
once per block, so a small image cannot take the space's deepest draws).
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from shared import catalog
from shared.catalog import CONVSTRIX_MAX_BLOCKS, max_blocks
from shared.errors import ConfigError

log = logging.getLogger(__name__)

# where keras.applications downloads ImageNet weights from
WEIGHTS_HOST = ("storage.googleapis.com", 443)


def keras_cache(environ: dict | None = None) -> Path:
    """Keras's download cache: ``$KERAS_HOME/models``, else ``~/.keras/models``."""
    env = os.environ if environ is None else environ
    return Path(env.get("KERAS_HOME") or Path.home() / ".keras") / "models"


def reachable(address: tuple[str, int] = WEIGHTS_HOST, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


def weights_problem(
    model: str, weights: str | None, weights_dir: str | None, online: bool | None = None
) -> str | None:
    """Why the trials could not load ``weights``, or None when they can (pure but for the
    file checks; ``online`` None asks the network only when no local file answers)."""
    info = catalog.entry(model)
    if weights is None or info.weights_file is None:
        return None
    if weights != "imagenet":
        if Path(weights).is_file():
            return None
        return f"--weights {weights}: no such file; pass an existing .h5 file, or --weights none"
    folders = [Path(weights_dir)] if weights_dir else []
    if any((f / info.weights_file).is_file() for f in [*folders, keras_cache()]):
        return None
    if online is None:
        online = reachable()
    if online:
        return None
    where = f"--weights-dir {weights_dir}" if weights_dir else "no --weights-dir"
    return (
        f"{model} needs ImageNet weights, but {info.weights_file} is not in {where} nor in "
        f"{keras_cache()}, and {WEIGHTS_HOST[0]} cannot be reached to download it: put the "
        "file in a folder and pass --weights-dir DIR (or STRIX_WEIGHTS_DIR), or train from "
        "scratch with --weights none"
    )


def check_weights(model: str, weights: str | None, weights_dir: str | None, local: bool) -> None:
    """Refuse when this host's workers could not load the weights; with remote workers
    only, this host's view may not be theirs, so it is a warning."""
    problem = weights_problem(model, weights, weights_dir)
    if problem is None:
        return
    if local:
        raise ConfigError(problem)
    log.warning("%s (checked on this host; remote workers may have the file)", problem)


def size_problem(model: str, image_size: int, clamp: bool) -> str | None:
    """Why some draws of the model's space cannot be built at ``image_size``, or None."""
    if model != "convstrix" or clamp:
        return None
    deepest = max_blocks(image_size)
    if deepest >= CONVSTRIX_MAX_BLOCKS:
        return None
    return (
        f"--image-size {image_size} lets convstrix pool at most {deepest} blocks, but its "
        f"space draws num_blocks up to {CONVSTRIX_MAX_BLOCKS}: those trials would fail; pass "
        f"--clamp to draw num_blocks up to {deepest}, or --image-size "
        f"{2 ** (CONVSTRIX_MAX_BLOCKS - 1)} or more"
    )


def clamp_note(model: str, image_size: int, clamp: bool) -> str | None:
    """The line that says what ``--clamp`` changed, when it changed anything."""
    if model != "convstrix" or not clamp or max_blocks(image_size) >= CONVSTRIX_MAX_BLOCKS:
        return None
    deepest = max_blocks(image_size)
    return (
        f"--clamp: {image_size} px allows at most {deepest} ConvStrix blocks, so num_blocks "
        f"is drawn up to {deepest} instead of {CONVSTRIX_MAX_BLOCKS}"
    )


def check_sizes(model: str, image_size: int, clamp: bool) -> None:
    problem = size_problem(model, image_size, clamp)
    if problem:
        raise ConfigError(problem)
    if note := clamp_note(model, image_size, clamp):
        log.info("%s", note)
