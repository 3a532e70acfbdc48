"""``bench/studies/pruning.py --merge``: runs saved one pruner at a time become one set
of ratios."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.studies import pruning


def _run(pruner: str, seed: int, epochs: int, wall: float, val: float, test: float) -> dict:
    return {
        "pruner": pruner,
        "seed": seed,
        "trial_epochs": epochs,
        "wall_s": wall,
        "best_val_acc": val,
        "test_acc": test,
    }


def _save(path: Path, *runs: dict) -> str:
    path.write_text(json.dumps({"runs": list(runs)}))
    return str(path)


def test_merge_gives_per_seed_ratios_and_the_spread_over_seeds(tmp_path: Path) -> None:
    files = [
        _save(tmp_path / "none1.json", _run("none", 1, 300, 3000.0, 0.90, 0.89)),
        _save(tmp_path / "asha1.json", _run("asha", 1, 100, 1000.0, 0.89, 0.88)),
        _save(
            tmp_path / "s2.json",
            _run("none", 2, 200, 2400.0, 0.88, 0.87),
            _run("asha", 2, 50, 1200.0, 0.88, 0.86),
        ),
    ]
    out = tmp_path / "merged.json"
    assert pruning.main(["--merge", *files, "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    asha = {r["seed"]: r for r in saved["ratios"] if r["pair"] == "none/asha"}
    assert (asha[1]["trial_epochs_x"], asha[1]["wall_x"]) == (3.0, 3.0)
    assert (asha[2]["trial_epochs_x"], asha[2]["wall_x"]) == (4.0, 2.0)
    assert asha[1]["best_val_acc_gap_pp"] == pytest.approx(1.0)
    assert asha[2]["test_acc_gap_pp"] == pytest.approx(1.0)
    none = next(s for s in saved["summary"] if s["pruner"] == "none")
    assert (none["seeds"], none["trial_epochs"], none["trial_epochs_spread"]) == (2, 250, 100)
    pair = next(s for s in saved["ratio_summary"] if s["pair"] == "none/asha")
    assert (pair["seeds"], pair["trial_epochs_x"], pair["trial_epochs_x_spread"]) == (2, 3.5, 1.0)
    assert (pair["wall_x"], pair["wall_x_spread"]) == (2.5, 1.0)
    assert saved["merged"] == files


def test_merge_refuses_a_run_saved_twice_and_an_unreadable_file(tmp_path: Path) -> None:
    a = _save(tmp_path / "a.json", _run("asha", 1, 100, 1000.0, 0.89, 0.88))
    b = _save(tmp_path / "b.json", _run("asha", 1, 90, 900.0, 0.88, 0.87))
    with pytest.raises(SystemExit, match=r"\('asha', 1\)\] appear in more than one file"):
        pruning.main(["--merge", a, b])
    with pytest.raises(SystemExit, match=r"cannot read .*missing\.json"):
        pruning.main(["--merge", a, str(tmp_path / "missing.json")])
