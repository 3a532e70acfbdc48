"""``strix cache ls|rm``: what the prepared-data and feature caches hold, and clearing them.

Both live under the cache directory (``--cache-dir`` / ``$STRIX_CACHE_DIR``, else
``<home>/cache``): one folder per prepared image size, and ``features/`` with one folder
per frozen base and data split (float16, training and validation images; e.g. VGG19 at
128 px for all 60,000 is about 1 GB).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from shared.config import cli, settings
from shared.errors import ConfigError

EXAMPLES = """
  strix cache ls
  strix cache rm vggstrix-128px-3f2a9c0d1e4b5a67     # one feature cache
  strix cache rm --all --cache-dir /srv/strix/cache  # every cache there
"""


def _root(args: argparse.Namespace) -> Path:
    v = settings.resolve(args, ["cache_dir", "home"])
    return Path(v["cache_dir"]).expanduser()


def _entries(root: Path) -> list[tuple[str, Path]]:
    """(kind, folder) of every cache under ``root``."""
    data = [("data", p) for p in sorted(root.glob("*")) if (p / "meta.json").is_file()]
    feats = [("features", p) for p in sorted(root.glob("features/*")) if p.is_dir()]
    return data + feats


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run(args: argparse.Namespace) -> int:
    root = _root(args)
    entries = _entries(root)
    if args.action == "ls":
        print(f"caches in {root}:" if entries else f"no caches in {root}")
        for kind, path in entries:
            print(f"  {kind:9} {path.name:48} {_size(path) / 1e6:10.1f} MB")
        return 0
    doomed = entries if args.all else [e for e in entries if e[1].name in args.names]
    missing = set(args.names) - {p.name for _, p in doomed}
    if missing or not (args.all or args.names):
        known = ", ".join(p.name for _, p in entries) or "none"
        raise ConfigError(f"no cache named {sorted(missing) or '(none given)'}; known: {known}")
    for _, path in doomed:
        shutil.rmtree(path)
        print(f"removed {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = cli.new_parser("strix cache", "List or remove prepared-data and feature caches.", EXAMPLES)
    p.add_argument("action", choices=["ls", "rm"], help="list the caches, or remove some")
    p.add_argument("names", nargs="*", help="caches to remove (as `ls` names them)")
    p.add_argument("--all", action="store_true", help="with rm: remove every cache")
    settings.add(p, "cache_dir", "home")
    return p


def main(argv: list[str] | None = None) -> int:
    return cli.main("strix cache", build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
