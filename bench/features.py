"""What the frozen-base feature cache saves: extraction once, then epochs of the head only.

For each (model, size): the one-time extraction seconds, one epoch of the whole model on
images (uncached) and one epoch of its head on the cached features, on the same images;
the ratio is the per-epoch speed-up. ``weights=None`` gives the real timings without the
ImageNet files (only accuracy would differ).

    python -m bench.features --data-dir ../shared/data/fashion-mnist --limit 3000
"""

from __future__ import annotations

import argparse
import tempfile
import time

from bench._common import machine, make_parser, save_json, start, table

EXAMPLES = """
  python -m bench.features --data-dir ../shared/data/fashion-mnist
  python -m bench.features --cases vggstrix:64 --limit 6000 --out out/bench/features.json
"""
CASES = "vggstrix:32,vggstrix:64,mobilenet:56"
HEAD = {"num_blocks": 0, "fcl_num_layers": 1, "fcl_layer_size": 256, "fcl_dropout_rate": 0.25}


def _params(model: str) -> dict:
    if model == "vggstrix":
        return {**HEAD, "batch_size": 64}
    return {"dropout_rate": 0.2, "freeze_base": True, "batch_size": 64}


def _epoch(model: str, size: int, data: object, cache: str | None) -> float:
    """Seconds of the second epoch: building, compiling and tracing happen in the first."""
    from shared.training.callbacks import EpochRecorder
    from shared.training.loop import train

    recorder = EpochRecorder()
    train(
        model,
        _params(model),
        data=data,
        epochs=2,
        early_stopping=False,
        validation=False,
        weights=None,
        feature_cache=cache,
        recorder=recorder,
    )
    return recorder.epoch_seconds[-1]


def measure(model: str, size: int, args: argparse.Namespace) -> dict:
    from shared.data import features
    from shared.data.cache import load
    from shared.data.spec import DataSpec
    from shared.models import build_model

    spec = DataSpec(image_size=size, channels=3, limit=args.limit, test_limit=args.limit // 5)
    with tempfile.TemporaryDirectory() as cache:
        data = load(spec, data_dir=args.data_dir, cache_dir=cache)
        started = time.perf_counter()
        built = build_model(model, _params(model), image_size=size, channels=3, weights=None)
        features.features_for(built, model, None, data, cache)
        extract = time.perf_counter() - started
        uncached = _epoch(model, size, data, None)
        cached = _epoch(model, size, data, cache)
    n = len(data.y_train)
    return {
        "model": model,
        "size": size,
        "train_images": n,
        "extract_s": round(extract, 1),
        "epoch_uncached_s": round(uncached, 2),
        "epoch_cached_s": round(cached, 2),
        "speedup": round(uncached / cached, 1),
    }


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("python -m bench.features", __doc__.splitlines()[0], EXAMPLES)
    p.add_argument("--data-dir", required=True, help="Fashion-MNIST idx files")
    p.add_argument("--cases", default=CASES, help="model:size pairs, comma-separated")
    p.add_argument("--limit", type=int, default=3000, help="training images")
    p.add_argument("--out", help="write the results as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = start(build_parser(), argv)
    rows = []
    for case in args.cases.split(","):
        model, size = case.split(":")
        rows.append(measure(model, int(size), args))
        print(table(rows[-1:]), flush=True)
    print(table(rows))
    save_json(args.out, {**machine(), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
