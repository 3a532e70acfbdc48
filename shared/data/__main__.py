"""``python -m shared.data prepare ...``: the old spelling of ``strix prepare``."""

from __future__ import annotations

import sys

from shared.data.prepare import main


def run(argv: list[str]) -> int:
    return main(argv[1:] if argv[:1] == ["prepare"] else argv)


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
