"""``strix prepare`` (also ``python -m shared.data prepare``): resize Fashion-MNIST once
into the uint8 cache that every worker on a host memory-maps."""

from __future__ import annotations

import argparse

from shared.config import cli, defaults, settings
from shared.data.spec import INTERPOLATIONS

EXAMPLES = """
  strix prepare --size 128
  strix prepare --size 224 --channels 3 --interpolation cubic
  python -m shared.data prepare --size 32 --data-dir /usr/share/datasets/fashion-mnist \\
      --cache-dir /srv/strix/cache
"""


def build_parser() -> argparse.ArgumentParser:
    p = cli.new_parser(
        "strix prepare",
        "Resize Fashion-MNIST once into the shared uint8 cache used by all workers.",
        EXAMPLES,
    )
    p.add_argument("--size", type=int, default=defaults.IMAGE_SIZE, help="side in pixels")
    p.add_argument("--channels", type=int, choices=(1, 3), default=defaults.CHANNELS)
    p.add_argument("--interpolation", choices=INTERPOLATIONS, default=defaults.INTERPOLATION)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    settings.add(p, "data_dir", "cache_dir", "home")
    return p


def run(args: argparse.Namespace) -> int:
    from shared.data.cache import prepare
    from shared.data.spec import DataSpec

    v = settings.resolve(args, ["data_dir", "cache_dir", "home"])
    cache_dir = v["cache_dir"]
    spec = DataSpec(image_size=args.size, channels=args.channels, interpolation=args.interpolation)
    path = prepare(spec, data_dir=v["data_dir"], cache_dir=cache_dir, progress=not args.no_progress)
    size_mb = sum(f.stat().st_size for f in path.glob("*.npy")) / 1e6
    print(f"cache: {path}")
    print(f"size: {size_mb:.1f} MB")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.main("strix prepare", build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
