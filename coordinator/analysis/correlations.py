"""Which hyper-parameters matter: each one's Spearman correlation with validation accuracy,
after Sánchez Acosta & Keith's Table 2.

Parameters are read from ``misc.vals``, hyperopt's own encoding of a trial: a numeric
parameter is its sampled value, a ``hp.choice`` is the index of the chosen option. Rank
correlation on a choice index is meaningful when the options are listed in increasing
order (batch_size, fcl_layer_size: the index ranks like the value); for unordered options
(optimizer, activation) only the size of rho says something, its sign depends on the
option order of the space. A parameter inactive in a trial (a conditional branch not
taken) is left out for that trial only.
"""

from __future__ import annotations

import math
from typing import Any


def is_ok(doc: dict) -> bool:
    """A finished trial with a validation accuracy to plot and correlate."""
    result = doc.get("result") or {}
    return result.get("status") == "ok" and result.get("val_accuracy") is not None


def shown_params(doc: dict) -> dict:
    """The trial's params by label: top-level values (a branch choice such as VGGStrix's
    ``conv`` is a dict there) over the flattened ones (labels nested inside a branch)."""
    from shared.spaces import flatten

    params = dict((doc.get("spec") or {}).get("params") or {})
    return {**flatten(params), **params}


def _new_entry() -> dict:
    return {"kind": "numeric", "integer": None, "values": {}, "options": {}}


def _note(entry: dict, value: float, shown: Any) -> None:
    """What one trial's shown value says about the parameter: a choice, an integer."""
    if shown is None:
        return
    if isinstance(shown, str | dict) or shown != value:
        entry["kind"] = "choice"
    is_int = isinstance(shown, int) and not isinstance(shown, bool)
    entry["integer"] = is_int if entry["integer"] is None else entry["integer"] and is_int
    entry["options"][int(value) if value.is_integer() else value] = _short(shown)


def encode(docs: list[dict]) -> dict[str, dict]:
    """Per hyper-parameter label: kind (numeric or choice), whether its values are
    integers, encoded values per tid and the option names of a choice."""
    params: dict[str, dict] = {}
    for doc in docs:
        flat = shown_params(doc)
        for label, vals in ((doc.get("misc") or {}).get("vals") or {}).items():
            entry = params.setdefault(label, _new_entry())
            if not vals:  # inactive in this trial (a conditional branch not taken)
                continue
            value = float(vals[0])
            entry["values"][doc.get("tid")] = value
            _note(entry, value, flat.get(label))
    for entry in params.values():
        entry["integer"] = bool(entry["integer"]) and entry["kind"] == "numeric"
    return params


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return f"{value:g}" if isinstance(value, float) else str(value)


def spearman(x: list[float], y: list[float]) -> tuple[float | None, float | None]:
    """(rho, p-value); None when undefined (fewer than 3 pairs, or a constant column)."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None, None
    from scipy.stats import spearmanr

    rho, p = spearmanr(x, y)
    rho, p = float(rho), float(p)
    return (rho if math.isfinite(rho) else None), (p if math.isfinite(p) else None)


def correlations(docs: list[dict], params: dict[str, dict]) -> list[dict]:
    """One row per hyper-parameter: Spearman rho with validation accuracy (seed 004, Table 2)."""
    accuracy = {d.get("tid"): float(d["result"]["val_accuracy"]) for d in docs if is_ok(d)}
    rows = []
    for label, entry in params.items():
        pairs = [(v, accuracy[t]) for t, v in entry["values"].items() if t in accuracy]
        rho, p = spearman([a for a, _ in pairs], [b for _, b in pairs])
        encoding = "value" if entry["kind"] == "numeric" else "option index"
        rows.append({"parameter": label, "encoding": encoding, "n": len(pairs), "rho": rho, "p": p})
    return rows
