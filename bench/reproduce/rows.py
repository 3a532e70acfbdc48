"""The published rows ``bench/reproduce.py`` reproduces: paper figure, source, command.

A row is data, not code: which model, which ``--set`` params, what the paper reports.
Every row runs through the project's own commands (``strix train``; the two Part III
studies through ``strix launch`` + ``strix final``), so the command printed beside a
figure in docs/reproduction.md is the one that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Row:
    key: str
    source: str  # "seed 003, Table 2", ...
    label: str  # what the paper calls the row
    model: str
    paper: float | None  # test accuracy in %, None when the paper gives only a figure
    sets: dict = field(default_factory=dict)
    image_size: int | None = None
    quick: bool = False
    study: int = 0  # > 0: a study of this many trials, then `strix final`
    paper_params: str = ""  # the paper's parameter count, as printed
    quick_budget: tuple[int, int] | None = None  # (epochs, images) when --quick must cut more


S003 = "seed 003, Table 2"
S004 = "seed 004, Table 1"
MOBILE = {"learning_rate": 0.0003, "lr_decay": 0.8}  # seed 003's MobileNet schedule
FLIP = {"aug_flip": 0.5}
FLIP_ROT = {"aug_flip": 0.5, "aug_rotate": 0.5}
AUG = (("none", {}), ("flip", FLIP), ("flip+rot", FLIP_ROT))


def _seed003() -> list[Row]:
    papers = {
        "simplecnn": ((92.52, 91.87, 91.16), "73K", "simple CNN"),
        "mobilenet": ((93.46, 94.13, 93.87), "3239K", "MobileNet"),
        "mobilenet_lite": ((92.94, 92.69, 92.49), "140K", "simplified MobileNet"),
    }
    rows = []
    for model, (figures, count, name) in papers.items():
        for (aug, sets), figure in zip(AUG, figures, strict=True):
            extra = {} if model == "simplecnn" else MOBILE
            rows.append(
                Row(
                    key=f"s003-{model}-{aug}",
                    source=S003,
                    label=f"{name}, {aug}",
                    model=model,
                    paper=figure,
                    sets={**extra, **sets},
                    image_size=None if model == "simplecnn" else 56,
                    quick=model == "simplecnn",
                    paper_params=count,
                )
            )
    return rows


# seed 004 Table 1: (layers, filters, hidden units) -> test accuracy
TABLE1 = {
    (1, 32, 256): 81.5, (1, 32, 512): 85.3, (1, 32, 1024): 86.9,
    (1, 64, 256): 84.2, (1, 64, 512): 87.0, (1, 64, 1024): 91.8,
    (2, 32, 256): 62.3, (2, 32, 512): 68.2, (2, 32, 1024): 73.1,
    (2, 64, 256): 70.2, (2, 64, 512): 72.2, (2, 64, 1024): 77.1,
}  # fmt: skip
BEST, WORST = (1, 64, 1024), (2, 32, 256)
DROPOUTS = (0.0, 0.2, 0.4, 0.6, 0.8)
# The 1024-unit rows' dense layer (12.8M weights) takes over 3 min an epoch on the loaded
# 2-core CPU: --quick trains seed 004's rows 6 epochs on 12,000 images (docs say so).
QUICK_ACOSTA = (6, 12000)


def _acosta(layers: int, filters: int, units: int, **more: object) -> dict:
    """A Table 1 point; batches of 500 as the paper (Adam, Strix's default, not its SGD)."""
    point = {"num_conv_layers": layers, "filters": filters, "hidden_units": units}
    return {**point, "batch_size": 500, **more}


def _seed004() -> list[Row]:
    rows = [
        Row(
            key=f"s004-{n}x{f}-{u}-avg",
            source=S004,
            label=f"{n} conv x {f} filters, {u} hidden, avg pool",
            model="acosta",
            paper=figure,
            sets=_acosta(n, f, u, pooling="avg"),
            quick=(n, f, u) in (BEST, WORST),
            quick_budget=QUICK_ACOSTA,
        )
        for (n, f, u), figure in TABLE1.items()
    ]
    rows.append(
        Row(
            key="s004-1x64-1024-max",
            source="seed 004, Table 3",
            label="best row with max pooling",
            model="acosta",
            paper=89.3,
            sets=_acosta(*BEST, pooling="max"),
            quick=True,
            quick_budget=QUICK_ACOSTA,
        )
    )
    rows += [
        Row(
            key=f"s004-dropout-{d:g}",
            source="seed 004, Figure 4",
            label=f"best row, dropout {d:g}",
            model="acosta",
            paper=None,
            sets=_acosta(*BEST, pooling="avg", dropout_rate=d),
        )
        for d in DROPOUTS
    ]
    return rows


def _parts() -> list[Row]:
    return [
        Row("p2-baseline", "Part II (as issue 17 cites it)", "fully connected baseline",
            "baseline", 85.0,
            quick=True),
        Row("p3-convstrix", "seed 001, Part III", "ConvStrix, 50 trials", "convstrix", 93.6,
            image_size=128, study=50),
        Row("p3-vggstrix", "seed 001, Part III", "VGGStrix, 50 trials", "vggstrix", 91.9,
            image_size=128, study=50),
    ]  # fmt: skip


ROWS: list[Row] = [*_seed003(), *_seed004(), *_parts()]
BY_KEY = {r.key: r for r in ROWS}
