"""Ranking saliency configurations by how far their maps can be trusted.

Each configuration is known by its saliency step run's aggregates (plain `name -> value`
dicts): first the share of its maps that beat random maps (`Maps_beating_random`, higher is
better), then its mean ROAD gap, LeRF minus MoRF (`Road_lerf_minus_morf_mean`, higher is
better). A configuration whose maps mostly fail the sanity check (`Maps_failing_sanity` above
`SANITY_FAILURE_SHARE`: they barely change when the model's weights are randomised) ranks
after all others, whatever its other figures. A figure a run does not have (older runs have no
ROAD) ranks after every present one. Configurations equal in every figure share a rank.
Nothing here knows about MLflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from steps import store_names

#: The figures the ranking reads, in the order it compares them (higher is better for each).
RANKED_BY = (store_names.BEATING_RANDOM_METRIC, store_names.ROAD_GAP_MEAN_METRIC)
#: Above this share of maps failing the sanity check, a configuration ranks last.
SANITY_FAILURE_SHARE = 0.5
#: Every figure a ranked configuration carries: those ranked by, then the sanity check's.
FIGURES = (*RANKED_BY, store_names.FAILING_SANITY_METRIC)


@dataclass(frozen=True)
class RankedConfiguration:
    """A configuration's place (1 is best), its label and the figures it was ranked by (None
    for a figure its run does not have)."""

    rank: int
    label: str
    figures: dict[str, float | None]

    @property
    def fails_sanity(self) -> bool:
        failing = self.figures.get(store_names.FAILING_SANITY_METRIC)
        return failing is not None and failing > SANITY_FAILURE_SHARE

    def summary(self) -> str:
        """`rise (80% beat random, ROAD gap 0.21)`, figures not known as `n/a`."""
        beating = self.figures.get(store_names.BEATING_RANDOM_METRIC)
        gap = self.figures.get(store_names.ROAD_GAP_MEAN_METRIC)
        text = (f"{'n/a' if beating is None else f'{beating:.0%}'} beat random, "
                f"ROAD gap {'n/a' if gap is None else f'{gap:.2f}'}")
        if self.fails_sanity:
            text += ", fails the sanity check"
        return f"{self.label} ({text})"


def _figure(metrics: dict[str, float], name: str) -> float | None:
    value = metrics.get(name)
    return None if value is None or not math.isfinite(value) else float(value)


def rank_configurations(metrics_by_label: dict[str, dict[str, float]]
                        ) -> list[RankedConfiguration]:
    """The configurations best first, each from its step run's metrics, by label."""
    def key(figures: dict[str, float | None]) -> tuple:
        failing = figures[store_names.FAILING_SANITY_METRIC]
        order: list = [failing is not None and failing > SANITY_FAILURE_SHARE]
        for name in RANKED_BY:
            value = figures[name]
            order += [value is None, -(value or 0.0)]
        return tuple(order)

    figures = {label: {name: _figure(metrics, name) for name in FIGURES}
               for label, metrics in metrics_by_label.items()}
    ordered = sorted(figures, key=lambda label: key(figures[label]))  # stable: ties keep order
    ranked: list[RankedConfiguration] = []
    for position, label in enumerate(ordered, start=1):
        tied = ranked and key(ranked[-1].figures) == key(figures[label])
        ranked.append(RankedConfiguration(ranked[-1].rank if tied else position, label,
                                          figures[label]))
    return ranked


def ranking_line(ranked: list[RankedConfiguration]) -> str:
    """`1. rise (80% beat random, ROAD gap 0.21), 2. sliding_window (...)`."""
    return ", ".join(f"{r.rank}. {r.summary()}" for r in ranked)


def table_row(ranked: RankedConfiguration, run_id: str) -> dict:
    """A row of the ranking table: rank, label, the saliency step run, the figures."""
    return {"rank": ranked.rank, "label": ranked.label, "saliency_run_id": run_id,
            **ranked.figures}


def from_row(row: dict) -> tuple[RankedConfiguration, str]:
    """A ranked configuration and its saliency step run's ID, from a row of the table as read
    back (absent figures there as None or NaN)."""
    figures = {name: _figure(row, name) for name in FIGURES}
    return RankedConfiguration(int(row["rank"]), str(row["label"]), figures), \
        str(row.get("saliency_run_id") or "")
