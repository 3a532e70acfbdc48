"""The flags that define a study, recorded with it, and the refusal when a re-launch
differs.

Re-running ``strix launch`` with the same ``--exp-key`` resumes the study. That is only
sound when the new trials are comparable with the old ones: same model, image size,
weights, data, budget and search space. So the first launch stamps these flags on every
job it posts (``strix.definition``, beside ``strix.data_source`` and ``strix.pruner``),
and a later launch that asks for other values is refused with one line naming each
difference and the two ways out: a new ``--exp-key``, or the old flags (flags outside the
definition, such as a higher ``--max-evals``, change freely). The pruner has its own
check (:func:`study_pruner`), which keeps the stored rule when its flags are omitted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.errors import ConfigError

if TYPE_CHECKING:
    from shared.store import Store

# flag -> the LaunchConfig attribute holding it. The budget (--max-evals, --max-epochs,
# --patience, --stop-after, --timeout) may change on resume, as may where trials run.
DEFINING = {
    "--model": "model",
    "--image-size": "image_size",
    "--channels": "channels",
    "--interpolation": "interpolation",
    "--limit": "limit",
    "--seed": "seed",
    "--weights": "weights",
    "--monitor": "monitor",
    "--clamp": "clamp",
    "--augment": "augment",
    "--feature-cache": "feature_cache",
}
# launch setting -> PrunerConfig field; unset ones come from the stored study, else defaults
PRUNER_SETTINGS = {
    "pruner": "kind",
    "min_epochs": "min_epochs",
    "reduction_factor": "reduction_factor",
    "pruner_startup": "startup",
}
DATA = "data"  # the data source's content hash (where the files are may change)


def definition(cfg: Any, source: dict) -> dict[str, Any]:
    """The defining flags of a launch, as the user would type their values."""
    out = {flag: getattr(cfg, attr) for flag, attr in DEFINING.items()}
    out["--weights"] = out["--weights"] or "none"
    out["--feature-cache"] = "auto" if out["--feature-cache"] else "off"
    out[DATA] = (source.get("hash") or "")[:12] or None
    return out


def stored_definition(store: Store, exp_key: str) -> dict | None:
    """The definition stamped on the study's jobs; None for a new study, or for one posted
    before Strix recorded definitions (nothing to compare with)."""
    docs = store.trials_in(exp_key, fields=["strix"], limit=1)
    return (docs[0].get("strix") or {}).get("definition") if docs else None


def differences(stored: dict, now: dict) -> dict[str, tuple[Any, Any]]:
    """{flag: (stored, now)} for every defining flag whose value changed. A flag the
    stored record lacks (added to Strix later) is not a difference."""
    diff = {k: (stored[k], v) for k, v in now.items() if k in stored and stored[k] != v}
    if DATA in diff and None in diff[DATA]:  # no data found on one side: nothing to compare
        del diff[DATA]
    return diff


def _shown(flag: str, value: Any) -> str:
    if flag == DATA:
        return f"data hash {value}..."
    if isinstance(value, bool):
        return flag if value else f"no {flag}"
    return f"{flag} {value}"


def refusal(exp_key: str, diff: dict[str, tuple[Any, Any]]) -> str:
    """One line: what the study was launched with, what this launch asks, the ways out."""
    was = ", ".join(_shown(k, old) for k, (old, _) in diff.items())
    now = ", ".join(_shown(k, new) for k, (_, new) in diff.items())
    suffix = "-".join(
        f"{k.lstrip('-')}-{v}" if not isinstance(v, bool) else k.lstrip("-")
        for k, (_, v) in diff.items()
        if k != DATA
    )
    new_key = f"{exp_key}-{suffix or 'new'}".replace("/", "_")
    return (
        f"study {exp_key} was launched with {was}; this launch asks for {now}, and its trials "
        f"would not be comparable: start a new study with --exp-key {new_key}, or resume "
        f"this one with its own flags (more trials: a higher --max-evals)"
    )


def check_same(exp_key: str, stored: dict | None, now: dict) -> None:
    """Refuse a re-launch whose defining flags differ from the study's record."""
    if stored is None:
        return
    diff = differences(stored, now)
    if diff:
        raise ConfigError(refusal(exp_key, diff))


def study_pruner(given: dict, stored: dict | None, max_epochs: int, exp_key: str) -> dict:
    """The study's pruner: a new study takes ``given`` over the defaults; a resumed one keeps
    the rule it was launched with (``stored``), and refuses flags that contradict it."""
    from shared.training.pruning import PrunerConfig

    if stored is None:
        return PrunerConfig(**{**given, "max_epochs": max_epochs}).to_dict()
    kept = PrunerConfig.from_dict(stored).to_dict()
    clash = [k for k, v in given.items() if kept[k] != v]
    if clash:
        flags = {field: "--" + name.replace("_", "-") for name, field in PRUNER_SETTINGS.items()}
        was = " ".join(f"{flags[k]} {kept[k]}" for k in PRUNER_SETTINGS.values())
        raise ConfigError(
            f"study {exp_key} was launched with {was}; a resumed study keeps its pruner, so "
            f"that every trial is judged by one rule: drop {', '.join(flags[k] for k in clash)}"
            " or start a new study with another --exp-key"
        )
    return {**kept, "max_epochs": max_epochs}


def stored_pruner(store: Store, exp_key: str) -> dict | None:
    """The pruner stamped on the study's jobs; ``{}`` (no pruning) for a study posted
    before Strix pruned, None for a new study."""
    docs = store.trials_in(exp_key, fields=["strix"], limit=1)
    return (docs[0].get("strix") or {}).get("pruner", {}) if docs else None
