"""Where a trial may read and write: only inside the worker's own directories.

A job document names ``tb_dir`` and ``weights``; whoever writes the database writes them.
Pure functions over a temporary tree (links included); the worker-level refusals are rows
of tests/test_bad_inputs.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import JobError
from shared.training.jobs import RunContext, keras_space, parse_config, trial_paths


def _trial(tmp_path: Path, exp_key: str = "s", **fields: str) -> tuple:
    job = parse_config({**keras_space("toy", {"x": 1.0}, {}, {}), **fields})
    ctx = RunContext(
        job={"exp_key": exp_key, "tid": 3},
        weights_dir=str(tmp_path / "weights"),
        work_dir=str(tmp_path / "work"),
    )
    return job, ctx


def test_paths_inside_the_worker_directories_are_kept(tmp_path: Path) -> None:
    job, ctx = _trial(tmp_path, tb_dir=str(tmp_path / "work" / "tb"), weights="m.h5")
    assert trial_paths(job, ctx) == (
        str(tmp_path / "weights" / "m.h5"),  # a bare name is taken in --weights-dir
        str(tmp_path / "work" / "tb" / "s" / "trial-3"),
    )
    job, ctx = _trial(tmp_path, tb_dir="tb")  # relative: in --workdir
    assert trial_paths(job, ctx) == (None, str(tmp_path / "work" / "tb" / "s" / "trial-3"))


@pytest.mark.parametrize(
    "exp_key, fields, field",
    [
        ("s", {"tb_dir": "/etc"}, "tb_dir"),
        ("s", {"tb_dir": "../elsewhere"}, "tb_dir"),
        ("../../../etc", {"tb_dir": "tb"}, "tb_dir"),  # the study's name walks out
        ("s", {"weights": "/etc/passwd"}, "weights"),
        ("s", {"weights": "../work/x.h5"}, "weights"),
    ],
)
def test_paths_leading_out_are_refused(tmp_path: Path, exp_key: str, fields: dict, field: str):
    job, ctx = _trial(tmp_path, exp_key, **fields)
    root = "--workdir" if field == "tb_dir" else "--weights-dir"
    with pytest.raises(JobError, match=rf"refusing the trial's {field} .*only .* its {root} /"):
        trial_paths(job, ctx)


def test_without_a_root_every_path_is_refused(tmp_path: Path) -> None:
    job, _ = _trial(tmp_path, tb_dir=str(tmp_path))
    with pytest.raises(JobError, match="a worker writes only under a --workdir"):
        trial_paths(job, RunContext(job={"exp_key": "s", "tid": 1}))
