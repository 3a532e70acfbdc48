"""``bench/reproduce.py``: the row table, the commands, and one real row end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.reproduce import main as reproduce
from bench.reproduce.rows import BY_KEY, ROWS


def test_every_quick_row_has_a_paper_figure_and_a_strix_train_command() -> None:
    args = reproduce.build_parser().parse_args(["--quick"])
    runs = reproduce.plan(args)
    assert {r.row.key for r in runs} == {r.key for r in ROWS if r.quick}
    for run in runs:
        assert run.row.paper is not None
        assert run.command().startswith(f"strix train --model {run.row.model} --seed 0")
    assert {r.row.model for r in runs} == {"simplecnn", "acosta", "baseline"}


def test_full_mode_adds_the_gpu_rows_and_the_studies() -> None:
    runs = reproduce.plan(reproduce.build_parser().parse_args(["--full"]))
    assert len(runs) == len(ROWS)
    study = next(r for r in runs if r.row.key == "p3-convstrix")
    assert "strix launch --model convstrix" in study.command()
    assert "--max-evals 50 --image-size 128" in study.command()
    mobile = next(r for r in runs if r.row.key == "s003-mobilenet-none")
    assert "--set learning_rate=0.0003 --set lr_decay=0.8" in mobile.command()


def test_extra_seeds_and_monitors_for_chosen_rows() -> None:
    argv = ["--quick", "--rows", "p2-baseline", "--seeds", "2"]
    argv += ["--monitors", "val_loss,val_accuracy", "--spread-limit", "1000"]
    runs = reproduce.plan(reproduce.build_parser().parse_args(argv))
    assert [(r.seed, r.monitor, r.budget.limit) for r in runs] == [
        (0, "val_loss", None),
        (0, "val_loss", 1000),
        (0, "val_accuracy", 1000),
        (1, "val_loss", 1000),
        (1, "val_accuracy", 1000),
    ]
    longer = reproduce.plan(reproduce.build_parser().parse_args([*argv, "--spread-long", "30x600"]))
    assert [(r.budget.epochs, r.budget.limit, r.budget.patience) for r in longer[5:]] == [
        (30, 600, 5)
    ] * 4


def test_one_row_runs_through_strix_train_and_lands_in_the_doc(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIX_DATA_DIR", str(data_dir))
    monkeypatch.setenv("STRIX_CACHE_DIR", str(tmp_path / "cache"))
    doc = tmp_path / "reproduction.md"
    argv = ["--quick", "--rows", "p2-baseline", "--epochs", "1", "--limit", "300"]
    assert reproduce.main([*argv, "--out", str(tmp_path / "runs"), "--doc", str(doc)]) == 0
    (result,) = (tmp_path / "runs" / "p2-baseline").glob("*/result.json")
    accuracy = 100 * json.loads(result.read_text())["test_accuracy"]
    text = doc.read_text()
    assert f"| {BY_KEY['p2-baseline'].paper:.2f} | {accuracy:.2f} |" in text
    assert "strix train --model baseline --seed 0 --monitor val_loss --epochs 1" in text
    # a second document from the same runs folder keeps its own header
    other = tmp_path / "other.md"
    assert reproduce.main([*argv, "--out", str(tmp_path / "runs"), "--doc", str(other)]) == 0
    assert (
        reproduce.main([*argv, "--out", str(tmp_path / "runs"), "--doc", str(doc), "--doc-only"])
        == 0
    )
    assert f"--doc {doc}" in doc.read_text() and f"--doc {other}" in other.read_text()


def test_a_long_spread_on_the_whole_training_set_with_one_monitor() -> None:
    argv = ["--quick", "--rows", "s003-simplecnn-none", "--seeds", "2"]
    argv += ["--monitors", "val_loss,val_accuracy", "--spread-limit", "1000"]
    runs = reproduce.plan(
        reproduce.build_parser().parse_args([*argv, "--spread-long", "40xall:val_loss"])
    )
    long = [r for r in runs if r.budget.epochs == 40]
    assert [(r.seed, r.monitor, r.budget.limit, r.budget.patience) for r in long] == [
        (0, "val_loss", None, 5),
        (1, "val_loss", None, 5),
    ]
    assert long[0].folder.name == "seed0-val_loss-e40-p5"
    with pytest.raises(SystemExit):
        reproduce.build_parser().parse_args([*argv, "--spread-long", "40xall:loss"])


def test_extra_seeds_at_the_rows_own_budget() -> None:
    argv = ["--quick", "--rows", "p2-baseline", "s003-simplecnn-flip", "--seeds", "3"]
    argv += ["--seed-rows", "p2-baseline", "--seeds-at-budget", "s003-simplecnn-flip"]
    runs = reproduce.plan(reproduce.build_parser().parse_args(argv))
    flip = [r for r in runs if r.row.key == "s003-simplecnn-flip"]
    assert [r.folder.name for r in flip] == [f"seed{s}-val_loss-e10" for s in range(3)]


@pytest.mark.slow
def test_a_full_mode_mobilenet_row_runs_with_the_imagenet_file(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU set's MobileNet rows, cut to one epoch on 300 images: the weights file in
    ../shared/weights, the 56 px input and seed 003's schedule all go through."""
    weights = reproduce.WEIGHTS
    if not any(weights.glob("mobilenet_v2*.h5")):
        pytest.skip(f"no MobileNetV2 ImageNet file in {weights}")
    monkeypatch.setenv("STRIX_DATA_DIR", str(data_dir))
    monkeypatch.setenv("STRIX_CACHE_DIR", str(tmp_path / "cache"))
    doc = tmp_path / "reproduction.md"
    argv = ["--full", "--rows", "s003-mobilenet_lite-none", "--epochs", "1", "--limit", "300"]
    argv += ["--out", str(tmp_path / "runs"), "--doc", str(doc), "--weights-dir", str(weights)]
    assert reproduce.main(argv) == 0
    (result,) = (tmp_path / "runs" / "s003-mobilenet_lite-none").glob("*/result.json")
    assert 0.0 < json.loads(result.read_text())["test_accuracy"] <= 1.0
    assert "--set learning_rate=0.0003 --set lr_decay=0.8 --image-size 56" in doc.read_text()
