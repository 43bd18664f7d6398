"""Writing many small runs (one per image sample) with the fewest tracking calls.

Each run is one `create_run` (with all its tags), one `log_batch` (all its metrics and params)
and one `set_terminated`, instead of a call per value. A run whose writing fails is marked
FAILED, never left RUNNING.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import click
from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

from steps.tracking import RUN_NAME_TAG


@dataclass
class SampleRun:
    name: str
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


class SampleRunWriter:
    def __init__(self, experiment_id: str, client: MlflowClient | None = None) -> None:
        self.experiment_id = experiment_id
        self.client = client or MlflowClient()

    def write(self, sample: SampleRun) -> str:
        """Write one run; returns its ID."""
        now = int(time.time() * 1000)
        run = self.client.create_run(
            self.experiment_id, start_time=now, tags={**sample.tags, RUN_NAME_TAG: sample.name}
        )
        run_id = run.info.run_id
        try:
            self.client.log_batch(
                run_id,
                metrics=[Metric(k, v, now, 0) for k, v in sample.metrics.items()],
                params=[Param(k, str(v)) for k, v in sample.params.items()],
            )
        except BaseException:
            self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            raise
        self.client.set_terminated(run_id)
        return run_id

    def write_all(self, samples: list[SampleRun], label: str) -> list[str]:
        """Write every run in order, with a progress bar (rate and ETA) on stderr."""
        run_ids = []
        started = time.monotonic()
        with click.progressbar(samples, label=label, file=sys.stderr,
                               show_eta=True, show_pos=True,
                               item_show_func=lambda _: _rate(len(run_ids), started)) as bar:
            for sample in bar:
                run_ids.append(self.write(sample))
        return run_ids


def _rate(done: int, started: float) -> str:
    elapsed = time.monotonic() - started
    return f"{done / elapsed:.1f} runs/s" if elapsed > 0 and done else ""
