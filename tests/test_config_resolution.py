"""How every command resolves its settings: the database rule and explicit zeros.

The database named in a ``mongodb://host/DB`` URI is used unless ``--db`` or ``STRIX_DB``
says otherwise, in launch, worker, results, final, report and cluster alike (it once
went to ``strix`` whatever the URI said). An explicit 0 is honoured or refused with a
clear error; it never silently becomes the default.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from coordinator import cluster, final, launch, report, results
from shared.errors import ConfigError
from shared.store import parse_target
from worker import config as worker_config

URI = "mongodb://127.0.0.1:27017/mydb"


def launch_db(argv: list[str]) -> str:
    cfg = launch.resolve(launch.build_parser().parse_args(["--model", "baseline", *argv]))
    return parse_target(cfg.mongo, cfg.db).db


def worker_db(argv: list[str]) -> str:
    cfg = worker_config.resolve(worker_config.build_parser().parse_args(argv))
    return parse_target(cfg.mongo, cfg.db).db


def reader_db(module: object, extra: list[str]) -> Callable[[list[str]], str]:
    def resolve(argv: list[str]) -> str:
        args = module.build_parser().parse_args([*extra, *argv])  # type: ignore[attr-defined]
        return parse_target(*results.store_location(args)).db

    return resolve


def cluster_db(argv: list[str]) -> str:
    args = cluster.build_parser().parse_args(["up", "--gpus", "0", *argv])
    options = cluster._options(args)
    plan = cluster.plan_cluster([0], options)
    (uri,) = {w.env["STRIX_MONGO"] for w in plan.workers}
    return parse_target(uri).db


COMMANDS = {
    "launch": launch_db,
    "worker": worker_db,
    "results": reader_db(results, []),
    "final": reader_db(final, ["--exp-key", "s"]),
    "report": reader_db(report, ["--exp-key", "s"]),
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_uri_names_the_database_unless_overridden(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolve = COMMANDS[name]
    monkeypatch.delenv("STRIX_DB", raising=False)
    monkeypatch.delenv("STRIX_MONGO", raising=False)
    assert resolve(["--mongo", URI]) == "mydb"
    assert resolve(["--mongo", "mongodb://127.0.0.1:27017"]) == "strix"
    assert resolve(["--mongo", URI, "--db", "flagdb"]) == "flagdb"
    monkeypatch.setenv("STRIX_DB", "envdb")
    assert resolve(["--mongo", URI]) == "envdb"
    assert resolve(["--mongo", URI, "--db", "flagdb"]) == "flagdb"
    monkeypatch.delenv("STRIX_DB")
    monkeypatch.setenv("STRIX_MONGO", URI)
    assert resolve([]) == "mydb"


def test_cluster_puts_the_database_in_the_workers_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONGO_ROOT_PASSWORD", "example-not-secret")
    monkeypatch.delenv("STRIX_DB", raising=False)
    assert cluster_db([]) == "strix"
    assert cluster_db(["--db", "flagdb"]) == "flagdb"
    monkeypatch.setenv("STRIX_DB", "envdb")
    assert cluster_db([]) == "envdb"


def test_hyperopt_worker_mongo_form_names_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STRIX_DB", raising=False)
    assert worker_db(["--mongo=localhost:1234/foo_db"]) == "foo_db"
    cfg = worker_config.resolve(worker_config.build_parser().parse_args(["--mongo=h:1/d"]))
    assert parse_target(cfg.mongo).collection == "jobs"


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--max-attempts", "0"], "--max-attempts must be >= 1, got 0"),
        (["--max-consecutive-failures", "0"], "--max-consecutive-failures must be >= 1, got 0"),
        (["--max-jobs", "0"], "--max-jobs must be >= 1, got 0"),
        (["--poll-interval", "0"], "--poll-interval must be > 0, got 0.0"),
        (["--grace", "0"], "--grace must be > 0, got 0.0"),
        (["--max-jobs-in-db", "0"], "--max-jobs-in-db must be >= 1, got 0"),
    ],
)
def test_worker_zeros_are_refused_not_defaulted(argv: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("-", r"\-")):
        worker_config.resolve(worker_config.build_parser().parse_args(argv))


def test_worker_honours_explicit_values() -> None:
    args = worker_config.build_parser().parse_args(
        ["--max-attempts", "1", "--poll-interval", "0.5", "--poll-cap", "0.5", "--no-subprocesses"]
    )
    cfg = worker_config.resolve(args)
    assert (cfg.max_attempts, cfg.poll_floor, cfg.poll_cap, cfg.isolate) == (1, 0.5, 0.5, False)
    iso = worker_config.build_parser().parse_args(["--use-subprocesses"])
    assert worker_config.resolve(iso).isolate is True


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--max-attempts", "0"], "--max-attempts must be >= 1, got 0"),
        (["--heartbeat", "0"], "--heartbeat must be > 0, got 0.0"),
        (["--image-size", "0"], "--image-size must be a positive integer, got 0"),
        (["--max-queue-len", "0"], "--max-queue-len must be a positive integer, got 0"),
        (["--patience", "0"], "--patience must be >= 1 epoch, got 0"),
    ],
)
def test_launch_zeros_are_refused_not_defaulted(argv: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("-", r"\-")):
        launch.resolve(launch.build_parser().parse_args(["--model", "baseline", *argv]))


def test_launch_honours_patience_one() -> None:
    args = launch.build_parser().parse_args(["--model", "baseline", "--patience", "1"])
    assert launch.resolve(args).patience == 1


def test_allowed_modules_come_from_flag_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    parse = worker_config.build_parser().parse_args
    monkeypatch.setenv("STRIX_ALLOW_MODULES", "pkg_a, pkg_b.sub")
    assert worker_config.resolve(parse([])).allow_modules == ("pkg_a", "pkg_b.sub")
    flagged = parse(["--allow-module", "mine", "--allow-module", "other"])
    assert worker_config.resolve(flagged).allow_modules == ("mine", "other")
    with pytest.raises(ConfigError, match="is not a package name"):
        worker_config.resolve(parse(["--allow-module", "os; rm"]))
