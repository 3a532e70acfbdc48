"""Objectives written for plain hyperopt: a float loss, a result dict, an attachment."""

from __future__ import annotations

import math

from hyperopt import STATUS_OK, hp

SPACE = {
    "x": hp.uniform("x", -5, 5),
    "kind": hp.choice("kind", [{"name": "a", "w": hp.loguniform("w", -3, 0)}, {"name": "b"}]),
    "n": hp.quniform("n", 1, 8, 1),
}


def quadratic(params: dict) -> float:
    """hyperopt's classic: a plain float is the loss."""
    w = params["kind"].get("w", 1.0)
    return (params["x"] - 1.0) ** 2 * w + params["n"] / 100


def with_attachment(params: dict) -> dict:
    """A result dict that also stores a per-trial attachment, as hyperopt allows."""
    loss = quadratic(params)
    return {"loss": loss, "status": STATUS_OK, "attachments": {"note": f"x={params['x']}"}}


def not_a_number(params: dict) -> float:
    return math.nan if params["x"] < 0 else math.inf
