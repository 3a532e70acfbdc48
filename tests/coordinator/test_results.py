"""results, final and report against one real study (real workers, data, MongoDB, Keras).

The study runs once per module: 4 baseline trials of 1 epoch on 400 images at 28 px, with
one local worker, posted by ``coordinator.launch`` in a subprocess exactly as a user runs
it. Every tool is then run as a subprocess too, and its outputs are checked against the
database and against each other (the exported model must reproduce the reported accuracy).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from coordinator.analysis.correlations import spearman
from coordinator.results import CLEAR
from coordinator.study.summary import as_epoch
from shared.config import defaults
from shared.data.idx import CLASS_NAMES
from shared.store import Store

ROOT = Path(__file__).resolve().parents[2]
EXP = "t1"
N_TRIALS = 4
TEST_LIMIT = 500
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(
    module: str, *args: str, env: dict, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def study(mongo_server: str, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One finished study; returns what the tests need to reach it."""
    home = tmp_path_factory.mktemp("strix-home")
    env = {
        **os.environ,
        defaults.ENV_HOME: str(home),
        defaults.ENV_CACHE_DIR: str(home / "cache"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env.pop(defaults.ENV_MONGO, None)
    env.pop(defaults.ENV_DB, None)
    db = f"strix_test_{uuid.uuid4().hex[:10]}"
    args = ["--model", "baseline", "--mongo", mongo_server, "--db", db, "--local-workers", "1"]
    args += ["--max-evals", str(N_TRIALS), "--image-size", "28", "--limit", "400"]
    args += ["--max-epochs", "1", "--data-dir", str(data_dir), "--seed", "1", "--no-progress"]
    cmd = [sys.executable, "-m", "coordinator.launch", *args, "--exp-key", EXP]
    log = home / "launch.log"
    with log.open("wb") as out:
        launch = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            running = watch_running(mongo_server, db, launch)
            launch.wait(timeout=540)
        finally:
            if launch.poll() is None:
                launch.kill()
                launch.wait()
    assert launch.returncode == 0, log.read_text()[-3000:]
    return {
        "mongo": mongo_server,
        "db": db,
        "env": env,
        "home": home,
        "data_dir": data_dir,
        "running": running,
    }


def watch_running(url: str, db: str, launch: subprocess.Popen) -> list[dict]:
    """Poll the study while it runs; the first running trials seen once a worker has
    started one (between its reservation and its first write a trial has no spec yet)."""
    from coordinator.results import study_status
    from shared.errors import ConfigError
    from shared.store import connect

    store = connect(url, db)
    try:
        while launch.poll() is None:
            try:
                running = study_status(store, EXP)["running"]
            except ConfigError:  # nothing posted yet
                running = []
            if any(row["max_epochs"] is not None for row in running):
                return running
            time.sleep(0.3)
    finally:
        store.close()
    return []


def results(study: dict, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    store = ["--mongo", study["mongo"], "--db", study["db"]]
    return run_cli("coordinator.results", *store, *args, env=env or study["env"], timeout=120)


def check_png(path: Path) -> np.ndarray:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert float(image[..., :3].std()) > 0.01, f"{path} is blank"
    return image


# --- fast units ----------------------------------------------------------------------------


def test_as_epoch_reads_every_time_form_the_stores_return() -> None:
    moment = dt.datetime(2024, 5, 1, 12, 0, 0, 500000)
    expected = moment.replace(tzinfo=dt.UTC).timestamp()
    assert as_epoch(moment) == pytest.approx(expected)  # hyperopt: naive UTC datetime
    assert as_epoch("2024-05-01 12:00:00.500000") == pytest.approx(expected)  # nx-27017
    assert as_epoch(expected) == expected  # Strix's started/ended
    assert as_epoch(None) is None and as_epoch("garbage") is None


def test_spearman_matches_the_definition_and_refuses_constant_columns() -> None:
    rho, p = spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7])  # y ranks: 1, 2, 3.5, 5, 3.5
    expected = np.corrcoef([1, 2, 3, 4, 5], [1, 2, 3.5, 5, 3.5])[0, 1]  # Pearson on ranks
    assert rho == pytest.approx(expected) and 0 < p < 1
    assert spearman([1, 1, 1, 1], [1, 2, 3, 4]) == (None, None)
    assert spearman([1, 2], [2, 1]) == (None, None)


def test_encoding_of_real_hyperopt_trials_with_a_conditional_branch() -> None:
    """VGGStrix's ``conv`` branch is a choice (a dict in the params); labels inside a branch
    count only in the trials that took it; rho is exact for a monotone relation."""
    from hyperopt import Trials, fmin, rand, space_eval

    from coordinator.analysis.correlations import correlations, encode
    from shared.spaces import vggstrix_space

    space, trials = vggstrix_space(), Trials()
    rng = np.random.default_rng(0)
    fmin(lambda c: 0.0, space, rand.suggest, 16, trials=trials, rstate=rng, show_progressbar=False)
    docs = []
    for t in trials.trials:
        params = space_eval(space, {k: v[0] for k, v in t["misc"]["vals"].items() if v})
        acc = 0.5 - 0.01 * float(np.log(params["learning_rate"]))  # falls as lr grows
        result = {"status": "ok", "val_accuracy": acc, "loss": 1 - acc}
        docs.append({"tid": t["tid"], "state": 2, "result": result, "spec": {"params": params}})
        docs[-1]["misc"] = t["misc"]
    params = encode(docs)
    kinds = {label: entry["kind"] for label, entry in params.items()}
    assert kinds["conv"] == kinds["optimizer"] == kinds["batch_size"] == "choice"
    assert kinds["learning_rate"] == kinds["fcl_num_layers"] == "numeric"
    branch = [d["misc"]["vals"]["conv"][0] for d in docs]
    rows = {r["parameter"]: r for r in correlations(docs, params)}
    assert rows["block_size"]["n"] == branch.count(1) < len(docs)
    assert rows["num_blocks"]["n"] == branch.count(2)
    assert rows["conv"]["n"] == rows["learning_rate"]["n"] == len(docs)
    assert rows["learning_rate"]["rho"] == pytest.approx(-1.0)
    assert (
        rows["conv"]["encoding"] == "option index" and rows["learning_rate"]["encoding"] == "value"
    )


def _finished_docs() -> list[dict]:
    """Five successful trials and a failed one: an integer, a choice and a float parameter."""
    docs = []
    for tid in range(6):
        block, lr, opt, acc = 1 + tid % 3, 10.0 ** -(1 + tid % 4), tid % 2, 0.5 + 0.05 * tid
        result = {"status": "ok", "loss": 1 - acc, "val_accuracy": acc} if tid < 5 else {}
        params = {"block_size": block, "learning_rate": lr, "optimizer": ["adam", "sgd"][opt]}
        vals = {"block_size": [float(block)], "learning_rate": [lr], "optimizer": [opt]}
        misc = {"vals": vals}
        docs.append({"tid": tid, "state": 2, "result": result, "spec": {"params": params}})
        docs[-1]["misc"] = misc
    docs[-1]["result"] = {"status": "fail", "reason": "diverged"}
    return docs


def test_report_figures_name_the_study_and_integers_sit_on_integer_ticks() -> None:
    import warnings

    from coordinator.analysis import plots
    from coordinator.analysis.correlations import encode

    docs, name = _finished_docs(), "study-7q"
    params = encode(docs)
    assert params["block_size"]["integer"] and params["block_size"]["kind"] == "numeric"
    assert not params["learning_rate"]["integer"] and params["optimizer"]["kind"] == "choice"
    prov = {"f1": dict.fromkeys(CLASS_NAMES, 0.5), "test_accuracy": 0.5}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # matplotlib warns with UserWarnings
        figures = [
            plots.losses(docs, name),
            plots.params(docs, params, name),
            plots.curves([(0, [(1, 0.4), (2, 0.5)]), (3, [(1, 0.6)])], name),
            plots.f1_per_class(prov, name),
            plots.confusion(np.eye(10, dtype=int), f"{name} trial 0"),
        ]
        for fig in figures:
            fig.canvas.draw()
    for fig in figures:
        titles = [ax.get_title() for ax in fig.axes] + [fig.get_suptitle()]
        assert any(t.startswith(name) for t in titles), titles
    axes = {ax.get_xlabel(): ax for ax in figures[1].axes}
    ticks = [float(t) for t in axes["block_size"].get_xticks()]
    assert ticks == [1.0, 2.0, 3.0]
    assert [t.get_text() for t in axes["optimizer"].get_xticklabels()] == ["adam", "sgd"]
    assert axes["learning_rate"].get_xscale() == "log"
    plots.pyplot().close("all")


def test_report_and_final_refuse_a_study_without_a_successful_trial(
    store: Store, mongo_url: str, db_name: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """One line and exit 2, before any folder, plot or TensorFlow; the line says what
    the study has and what to do."""
    from coordinator import final, report
    from tests.helpers import insert_toy_jobs

    insert_toy_jobs(store, "queued", 2)
    where = ["--mongo", mongo_url, "--db", db_name, "--out", str(tmp_path / "out")]
    assert report.main(["--exp-key", "queued", *where]) == 2
    assert final.main(["--exp-key", "queued", *where]) == 2
    assert report.main(["--exp-key", "nope", *where]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    counts = "(2 queued, 0 running, 0 ok, 0 failed, 0 error); wait for trials to finish"
    assert lines[0].startswith(
        f"strix report: error: study 'queued' has no successful trial yet {counts}"
    )
    assert lines[1].startswith(
        f"strix final: error: study 'queued' has no successful trial yet {counts}"
    )
    assert lines[2].startswith("strix report: error: study 'nope' has no trials in ")
    assert "known studies: queued" in lines[2] and len(lines) == 3
    assert not (tmp_path / "out").exists()


FLAG_PROBE = """
import json, sys, time
from coordinator import final, report
down = ["--exp-key", "s", "--mongo", "mongodb://127.0.0.1:9"]
started = time.monotonic()
codes = [final.main(down + a) for a in {final!r}] + [report.main(down + a) for a in {report!r}]
heavy = [m for m in ("tensorflow", "keras", "hyperopt", "matplotlib") if m in sys.modules]
print(json.dumps({{"codes": codes, "seconds": time.monotonic() - started, "heavy": heavy}}))
"""


def test_flag_errors_come_before_mongodb_and_tensorflow(tmp_path: Path) -> None:
    """Against an address where no server listens: every bad flag is its own one-line
    error, at once (no 5 s server selection), and nothing heavy is imported."""
    final_cases = [
        (["--epochs", "0"], "--epochs must be >= 1, got 0"),
        (["--limit", "5"], "--limit must be an integer in [20, 60000], got 5"),
        (["--test-limit", "3"], "--test-limit must be an integer in [10, 10000], got 3"),
        (["--fetch", "model.h5"], "--fetch model.h5: keras loads only files named *.keras"),
        (["--data-dir", "/nonexistent/fmnist"], "data directory /nonexistent/fmnist does not"),
        (["--seed", "-1"], "--seed must be in [0, 2**32), got -1"),
        (["--out", "/etc/hostname"], "--out /etc/hostname is a file"),
        (["--mongo", "nope"], "malformed MongoDB URI 'nope'"),
    ]
    report_cases = [
        (["--top", "0"], "--top must be >= 1, got 0"),
        (["--out", "/etc/hostname"], "--out /etc/hostname is a file"),
    ]
    code = FLAG_PROBE.format(final=[a for a, _ in final_cases], report=[a for a, _ in report_cases])
    env = {**os.environ, defaults.ENV_HOME: str(tmp_path)}
    env.pop(defaults.ENV_DATA_DIR, None)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["codes"] == [2] * (len(final_cases) + len(report_cases)), done.stderr
    assert probe["seconds"] < 4 and probe["heavy"] == [], probe
    lines = done.stderr.strip().splitlines()
    expected = [("strix final", f) for _, f in final_cases]
    expected += [("strix report", f) for _, f in report_cases]
    assert len(lines) == len(expected), done.stderr
    for line, (prog, fragment) in zip(lines, expected, strict=True):
        assert line.startswith(f"{prog}: error: ") and fragment in line, line


def test_final_finds_the_studys_recorded_data_and_says_when_it_changed(
    store: Store, data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from coordinator import final
    from coordinator.analysis.finished import choose_data_dir
    from shared.data.idx import load_raw, source_hash

    digest = source_hash(load_raw(data_dir))
    trial = {"spec": {"data": {"image_size": 28, "limit": 400, "test_limit": 100}}}

    def data_for(exp_key: str, recorded: dict) -> tuple:
        trials = store.trials(exp_key, meta={"data_source": recorded}, refresh=False)
        (tid,) = trials.new_trial_ids(1)
        misc = {"tid": tid, "cmd": None, "workdir": None, "idxs": {}, "vals": {}}
        trials.insert_trial_docs(trials.new_trial_docs([tid], [None], [{"status": "new"}], [misc]))
        cfg = final.FinalConfig(
            exp_key, None, tmp_path, None, str(tmp_path / "cache"), None, None, False, None, False
        )
        return final.study_data(store, trial, cfg)

    caplog.set_level("INFO", logger="coordinator")
    data, run = data_for("same", {"dir": str(data_dir), "hash": digest})
    assert run["data_dir"] == str(data_dir) and data.source_hash == digest
    assert "using the data it recorded" in caplog.text and "changed" not in caplog.text
    caplog.clear()
    data, run = data_for("changed", {"dir": str(data_dir), "hash": "0" * 64})
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "the data changed since the study ran: it recorded sha256 000000000000..." in warning
    assert f"{data_dir} hashes to {digest[:12]}..." in warning
    gone = {"dir": str(tmp_path / "gone"), "hash": digest}
    assert choose_data_dir(None, gone, "s") is None  # falls back to the usual search
    assert choose_data_dir("/explicit", {"dir": str(data_dir)}, "s") == "/explicit"
    assert choose_data_dir(None, None, "s") is None  # an older study: as before


def test_report_notes_data_that_no_longer_matches_the_study(data_dir: Path) -> None:
    from types import SimpleNamespace

    from coordinator.report import data_line, source_notes

    recorded = {"dir": str(data_dir), "hash": "f" * 64}
    store = SimpleNamespace(trials_in=lambda *a, **kw: [{"strix": {"data_source": recorded}}])
    notes = source_notes(store, "s", {"data": {"source_hash": "e" * 64}})  # type: ignore[arg-type]
    assert notes["source"] == recorded
    assert notes["data_note"].startswith("the data changed since the study ran: it recorded ")
    assert "but its directory now hashes to " in notes["data_note"]
    assert "but the final model's data hashes to eeeeeeeeeeee..." in notes["final_note"]
    line = data_line({"data": {"image_size": 28}, **notes})
    assert f"from {data_dir} (sha256 ffffffffffff...)" in line and "**Note:** the data" in line
    same = source_notes(store, "s", {"data": {"source_hash": "f" * 64}})  # type: ignore[arg-type]
    assert same["final_note"] is None


# --- results -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def status(study: dict) -> dict:
    out = results(study, "--exp-key", EXP, "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.slow
def test_results_json_counts_add_up_and_top_is_sorted(status: dict) -> None:
    counts = status["counts"]
    states = ("queued", "running", "ok", "failed", "error")
    assert sum(counts[k] for k in states) == counts["total"] == N_TRIALS
    assert counts["running"] == counts["queued"] == 0 and counts["requeued"] == 0
    assert status["model"] == "baseline" and status["running"] == []
    top = status["top"]
    assert len(top) == counts["ok"] >= 1
    losses = [r["loss"] for r in top]
    assert losses == sorted(losses)
    for row in top:
        assert row["loss"] == pytest.approx(1 - row["val_accuracy"])
        assert row["epochs"] == 1 and row["host"] and row["seconds"] > 0
        assert {"batch_size", "learning_rate", "optimizer"} <= set(row["params"])


@pytest.mark.slow
def test_running_trials_show_worker_epoch_and_elapsed_time(study: dict) -> None:
    """Seen live while the study ran: a running trial with its worker and budget."""
    assert study["running"], "no running trial was ever seen while the study ran"
    row = study["running"][0]
    assert 0 <= row["tid"] < N_TRIALS and row["host"] and row["max_epochs"] == 1
    assert row["epoch"] in (0, 1) and row["elapsed_s"] is not None and row["elapsed_s"] >= 0
    assert row["elapsed_s"] < 300


@pytest.mark.slow
def test_results_table_and_csv_show_the_same_trials(study: dict, status: dict) -> None:
    table = results(study, "--exp-key", EXP, "--top", "2")
    assert table.returncode == 0, table.stderr
    first = table.stdout.splitlines()[0]
    assert first.startswith(f"study {EXP} (baseline):") and f"{N_TRIALS} total" in first
    header = next(line for line in table.stdout.splitlines() if line.startswith("tid "))
    for column in ("val_accuracy", "epochs", "seconds", "host", "gpu", "learning_rate"):
        assert column in header.split()
    out = results(study, "--exp-key", EXP, "--format", "csv")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert rows and {"tid", "val_accuracy", "seconds", "host", "optimizer"} <= set(rows[0])
    assert [int(r["tid"]) for r in rows] == [r["tid"] for r in status["top"]]
    table_tids = [int(line.split()[0]) for line in table.stdout.splitlines() if line[:1].isdigit()]
    assert table_tids == [r["tid"] for r in status["top"][:2]]


@pytest.mark.slow
def test_results_overview_one_line_per_study_and_env_mongo(study: dict) -> None:
    env = {**study["env"], defaults.ENV_MONGO: study["mongo"]}  # no --mongo: the env var
    out = run_cli("coordinator.results", "--db", study["db"], "--format", "csv", env=env)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [r["exp_key"] for r in rows] == [EXP]
    assert int(rows[0]["total"]) == N_TRIALS and rows[0]["model"] == "baseline"
    two = results(study, "--exp-key", EXP, "--exp-key", "other", "--format", "json")
    assert two.returncode == 0, two.stderr
    lines = json.loads(two.stdout)
    assert [r["exp_key"] for r in lines] == [EXP, "other"]
    assert lines[1]["total"] == 0 and lines[0]["best_val_accuracy"] is not None
    bad_env = {**study["env"], defaults.ENV_MONGO: "mongodb://127.0.0.1:9/"}
    flag_wins = results(study, "--exp-key", EXP, env=bad_env)  # --mongo beats the env var
    assert flag_wins.returncode == 0, flag_wins.stderr


@pytest.mark.slow
def test_results_watch_redraws_until_the_count(study: dict) -> None:
    out = results(study, "--exp-key", EXP, "--watch", "0.2", "--watch-count", "3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(CLEAR) == 3
    assert out.stdout.count(f"study {EXP} (baseline)") == 3


@pytest.mark.slow
def test_results_errors_are_one_line_with_exit_2(study: dict) -> None:
    unknown = results(study, "--exp-key", "no-such-study")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("strix results: error: study 'no-such-study' has no trials")
    assert EXP in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1
    env = {**study["env"]}
    down = run_cli("coordinator.results", "--mongo", "mongodb://127.0.0.1:9", env=env)
    assert down.returncode == 2 and "Traceback" not in down.stderr
    assert down.stderr.startswith("strix results: error: cannot reach MongoDB")
    helptext = run_cli("coordinator.results", "--help", env=env)
    assert helptext.returncode == 0 and "--watch" in helptext.stdout
    last = helptext.stdout.rstrip().splitlines()[-1].lstrip()
    assert last.startswith(("strix-results", "strix results")), "--help ends with an example"
    assert "examples:" in helptext.stdout


@pytest.mark.slow
def test_export_writes_the_final_model_of_a_kept_best_trial(study: dict, tmp_path: Path) -> None:
    """The workers keep the final model of the 3 best trials (--keep-best's default);
    ``--export`` writes one as a .keras file that predicts; the others have none."""
    import keras

    from shared.store import connect

    store = connect(study["mongo"], study["db"])
    docs = list(store.jobs.find({"exp_key": EXP, "result.status": "ok"}))
    store.close()
    kept = [d for d in docs if d.get("kept_model")]
    third = sorted(d["result"]["loss"] for d in docs)[:3][-1]
    assert len(kept) >= min(3, len(docs)), "the 3 best keep their model"
    assert all(d["result"]["loss"] <= third for d in kept), "and only they (ties aside)"
    best = min(kept, key=lambda d: d["result"]["loss"])["tid"]
    target = tmp_path / "best.keras"
    done = results(study, "--exp-key", EXP, "--export", str(best), str(target))
    assert done.returncode == 0 and f"wrote trial {best}" in done.stdout, done.stderr
    probs = keras.models.load_model(target).predict(np.zeros((2, 28, 28, 1), np.uint8), verbose=0)
    assert probs.shape == (2, 10)
    again = results(study, "--exp-key", EXP, "--export", str(best), str(target))
    assert again.returncode == 2 and "never overwritten" in again.stderr
    for doc in (d for d in docs if not d.get("kept_model")):
        gone = results(
            study, "--exp-key", EXP, "--export", str(doc["tid"]), str(tmp_path / "x.keras")
        )
        assert gone.returncode == 2 and "kept no final model" in gone.stderr
        assert len(gone.stderr.strip().splitlines()) == 1


# --- final ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def final(study: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("final")
    args = ["--exp-key", EXP, "--mongo", study["mongo"], "--db", study["db"], "--epochs", "1"]
    args += ["--data-dir", str(study["data_dir"]), "--test-limit", str(TEST_LIMIT)]
    done = run_cli("coordinator.final", *args, "--out", str(out), env=study["env"])
    assert done.returncode == 0, done.stderr[-3000:]
    return {"out": out, "stdout": done.stdout}


def report_rows(text: str) -> dict[str, list[float]]:
    """The per-class rows of sklearn's classification_report, keyed by class name."""
    number = r"\s+(\d+\.\d{3})\s+(\d+\.\d{3})\s+(\d+\.\d{3})\s+(\d+)\s*$"
    rows = {}
    for line in text.splitlines():
        for name in CLASS_NAMES:
            m = re.match(rf"^\s*{re.escape(name)}{number}", line)
            if m:
                rows[name] = [float(g) for g in m.groups()]
    return rows


@pytest.mark.slow
def test_final_prints_the_per_class_report_and_a_confusion_png(final: dict) -> None:
    rows = report_rows(final["stdout"])
    assert list(rows) == list(CLASS_NAMES)  # ten rows, in class order
    assert sum(r[3] for r in rows.values()) == TEST_LIMIT
    accuracy = re.search(r"^\s*accuracy\s+(\d\.\d{3})\s+(\d+)\s*$", final["stdout"], re.M)
    assert accuracy and int(accuracy.group(2)) == TEST_LIMIT
    prov = json.loads((final["out"] / "provenance.json").read_text())
    assert round(prov["test_accuracy"], 3) == float(accuracy.group(1))
    for name, (_, _, f1, _) in rows.items():
        assert round(prov["f1"][name], 3) == f1
    assert prov["trained_on"] == "train+val" and prov["n_train"] == 400 and prov["epochs"] == 1
    assert prov["data"]["image_size"] == prov["image_size"] == 28 and prov["seeds"]["training"] == 1
    assert prov["versions"]["tensorflow"] and len(prov["data"]["source_hash"]) == 64
    source = prov["data_source"]
    assert source["hash"] == prov["data"]["source_hash"] and source["changed"] is False
    check_png(final["out"] / "confusion_matrix.png")


@pytest.mark.slow
def test_exported_model_predicts_uint8_and_reproduces_the_accuracy(
    final: dict, study: dict
) -> None:
    import keras

    from shared.data.cache import load
    from shared.data.spec import DataSpec

    prov = json.loads((final["out"] / "provenance.json").read_text())
    model = keras.models.load_model(final["out"] / "model.keras")
    spec = DataSpec.from_dict({k: v for k, v in prov["data"].items() if k != "source_hash"})
    data = load(spec, data_dir=study["data_dir"], cache_dir=study["home"] / "cache")
    x = np.asarray(data.x_test)
    assert x.dtype == np.uint8 and x.shape[1:] == (28, 28, 1)
    probs = model.predict(x, batch_size=256, verbose=0)
    assert probs.shape == (TEST_LIMIT, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    accuracy = float(np.mean(probs.argmax(axis=1) == data.y_test))
    # the same weights on the same images: at most a float tie may flip one prediction
    assert accuracy == pytest.approx(prov["test_accuracy"], abs=1.0 / TEST_LIMIT + 1e-9)


@pytest.mark.slow
def test_fetch_writes_the_stored_model(final: dict, study: dict, tmp_path: Path) -> None:
    import keras

    target = tmp_path / "fetched.keras"
    args = ["--exp-key", EXP, "--mongo", study["mongo"], "--db", study["db"]]
    done = run_cli("coordinator.final", *args, "--fetch", str(target), env=study["env"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert target.read_bytes() == (final["out"] / "model.keras").read_bytes()
    prov = json.loads(target.with_suffix(".provenance.json").read_text())
    assert (
        prov["model_sha256"]
        == json.loads((final["out"] / "provenance.json").read_text())["model_sha256"]
    )
    model = keras.models.load_model(target)
    probs = model.predict(np.zeros((3, 28, 28, 1), np.uint8), verbose=0)
    assert probs.shape == (3, 10)
    missing = run_cli(
        "coordinator.final",
        "--exp-key",
        "nope",
        *args[2:],
        "--fetch",
        str(target),
        env=study["env"],
    )
    assert missing.returncode == 2 and "has no stored model" in missing.stderr


# --- report --------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_plots_and_one_correlation_row_per_parameter(
    final: dict, study: dict, tmp_path: Path
) -> None:
    from hyperopt.base import Domain

    from shared.spaces import baseline_space

    args = ["--exp-key", EXP, "--mongo", study["mongo"], "--db", study["db"]]
    done = run_cli("coordinator.report", *args, "--out", str(tmp_path), env=study["env"])
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("losses", "params", "curves", "f1_per_class"):
        check_png(tmp_path / f"{name}.png")
    labels = set(Domain(lambda c: 0, baseline_space()).params)
    rows = list(csv.DictReader((tmp_path / "correlations.csv").open()))
    assert sorted(r["parameter"] for r in rows) == sorted(labels)
    encodings = {r["parameter"]: r["encoding"] for r in rows}
    assert encodings["optimizer"] == encodings["batch_size"] == "option index"
    assert encodings["learning_rate"] == "value"
    for row in rows:
        assert int(row["n"]) <= N_TRIALS
        if row["rho"]:
            assert -1.0 <= float(row["rho"]) <= 1.0
    md = (tmp_path / "report.md").read_text()
    assert "## Spearman correlation" in md and "## Final model (test set)" in md
    assert all(f"| {label} |" in md for label in labels)
    assert all(f"| {name} |" in md for name in CLASS_NAMES)
    assert f"from {study['data_dir']} (sha256 " in md and "**Note:**" not in md


def test_results_report_and_dashboard_give_a_trial_the_same_seconds() -> None:
    """One definition (issue 28: results said 21.8 s, report 19.96 s for one trial)."""
    import datetime as dt

    from optuna.trial import TrialState

    from coordinator.optuna_bridge.mapping import user_attrs
    from coordinator.report import top_rows
    from coordinator.study.summary import trial_row, trial_seconds

    result = {"status": "ok", "loss": 0.2, "val_accuracy": 0.8, "train_seconds": 19.96}
    doc = {"tid": 1, "state": 2, "result": result, "spec": {"params": {}}, "misc": {}}
    doc |= {"started": 1000.0, "ended": 1021.84}
    assert trial_seconds(doc) == 21.8  # wall time on the worker, from reservation to result
    assert trial_row(doc)["seconds"] == top_rows([doc], 1)[0]["seconds"] == 21.8
    assert user_attrs(doc, TrialState.COMPLETE, None)["seconds"] == 21.8
    iso = dt.datetime.fromtimestamp(1000.0, dt.UTC).isoformat()  # nx-27017 stringified
    assert trial_seconds({**doc, "started": iso}) == 21.8
    assert trial_seconds({"result": result}) == 20.0  # no stamps: the recorded training time
