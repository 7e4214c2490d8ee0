"""Weights & Biases, next to the run folder's files (`logger=wandb`; needs the `wandb` extra).

One W&B run per run folder: losses and evaluations as they come, the result's scalars in the
run summary, the density (or samples) figure as an image. W&B never decides the outcome of a
training run: when wandb is missing, unreachable or breaks mid-run, one warning line goes to
stderr and the run goes on with its files only. Offline mode (the default) writes under the
run folder's `wandb/`; `wandb sync <run folder>/wandb/offline-run-*` uploads it later.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from icnn_bench import io
from icnn_bench.errors import ConfigError
from icnn_bench.run_folder import CONFIG, DENSITY, SAMPLES, WANDB_ID, WEIGHTS
from icnn_bench.sinks.base import Sink

MODES = ("online", "offline", "disabled")
FILES_ONLY = "logging to files only"
MISSING = f"wandb is not installed: pip install 'icnn-bench[wandb]'; {FILES_ONLY}"

_warned: set[str] = set()  # warnings given once per process
_unreachable = False  # an online init failed: later runs in this process skip W&B


def resolve_mode(mode: str | None) -> str:
    """`mode`, else $WANDB_MODE, else offline; ConfigError for anything W&B cannot do."""
    if mode is None:
        value = os.environ.get("WANDB_MODE") or "offline"
        source = f"WANDB_MODE={value}"
    else:
        value = str(mode)
        source = f"logger.mode={value}"
    if value not in MODES:
        raise ConfigError(f"{source} is not a W&B mode; choose one of: {', '.join(MODES)}")
    return value


def _warn(message: str, once: bool = False) -> None:
    """One line on stderr (`once`: at most once per process)."""
    if once and message in _warned:
        return
    _warned.add(message)
    print(f"icnn-bench: warning: {message}", file=sys.stderr, flush=True)


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError:
        _warn(MISSING, once=True)
        return None
    return wandb


DEFAULT_PROJECT = "icnn-bench"  # where neither logger.project nor $WANDB_PROJECT says


class WandbSink(Sink):
    """Mirrors one run to W&B. `config` is the resolved run config (W&B's run config);
    `run_dir` the run folder: the run's name and, unless `dir` is given, where W&B writes."""

    def __init__(
        self,
        config: dict[str, Any],
        run_dir: Path,
        *,
        project: str | None = None,
        entity: str | None = None,
        group: str | None = None,
        tags: Iterable[str] | None = None,
        job_type: str = "train",
        mode: str | None = None,
        dir: str | Path | None = None,
        init_timeout: float = 30.0,
        swept: dict[str, Any] | None = None,
        log_weights: bool = False,
        silent: bool = True,
    ) -> None:
        self.mode = resolve_mode(mode)  # a bad mode fails before anything is trained
        self.config = config
        self.run_dir = Path(run_dir)
        self.project = project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
        self.entity = entity  # None: W&B's own (WANDB_ENTITY, or the account's default)
        self.group = group
        self.tags = [str(tag) for tag in (tags or [])]
        self.job_type = job_type
        self.dir = Path(dir or os.environ.get("WANDB_DIR") or self.run_dir)
        self.init_timeout = float(init_timeout)
        self.swept = dict(swept or {})  # the settings this sweep varies: flat config keys
        self.log_weights = log_weights
        self.silent = silent
        self.run: Any = None  # the open W&B run, if any
        self._resumed_from = 0  # a resumed run: history up to here is W&B's already
        self._wandb = None if self.mode == "disabled" else _import_wandb()
        self._tried = False  # one init attempt per sink
        self._step = 0  # the last step logged

    # -- the Sink interface -------------------------------------------------------------

    def start(self, info: dict[str, Any], total_steps: int) -> None:
        self._resumed_from = int(info.get("resumed_from_step") or 0)
        self._open(info)

    def log_train_losses(self, steps: list[int], losses: list[float]) -> None:
        if self.run is None or not steps:
            return
        with self._guard("logging training losses"):
            for step, loss in zip(steps, losses, strict=True):
                if step > self._resumed_from:  # a resumed run's history is there already
                    self.run.log({"train/loss": loss}, step=step)
            self._step = max(self._step, steps[-1])

    def log_eval(self, row: dict[str, float]) -> None:
        if self.run is None:
            return
        step = int(row["step"])
        if step <= self._resumed_from and self._resumed_from:
            return
        with self._guard("logging an evaluation"):
            self.run.log({f"eval/{k}": v for k, v in row.items() if k != "step"}, step=step)
            self._step = max(self._step, step)

    def finish(self, result: dict[str, Any]) -> None:
        self._open(result)  # a run that failed before training still shows up, as failed
        if self.run is None:
            return
        with self._guard("drawing the run's figures", drop=False):  # a picture is optional
            images = self._figures()
            if images:
                self.run.log(images, step=self._step)
        with self._guard("logging the result"):
            summary = {k: io.finite_or_none(v) for k, v in result.items() if _is_scalar(v)}
            self.run.summary.update(summary)
        weights = self.run_dir / WEIGHTS
        if self.log_weights and weights.exists():
            with self._guard("logging the weights", drop=False):
                artifact = self._wandb.Artifact(f"weights-{self.run.id}", type="model")
                artifact.add_file(str(weights))
                artifact.add_file(str(self.run_dir / CONFIG))
                self.run.log_artifact(artifact)
        run, self.run = self.run, None
        if run is not None:
            with self._guard("finishing its run"):
                run.finish(exit_code=0 if result.get("status") == "ok" else 1)

    # -- helpers ------------------------------------------------------------------------

    def _open(self, info: dict[str, Any]) -> None:
        """Start the W&B run on the first call; on failure warn once and stay files-only."""
        global _unreachable
        if self._tried:
            return
        self._tried = True
        if self._wandb is None:
            return
        if _unreachable and self.mode == "online":  # it already failed in this process
            _warn(f"W&B skipped: it did not start earlier in this process; {FILES_ONLY}", True)
            return
        wandb = self._wandb
        tags = list(dict.fromkeys([*self.tags, *_names(info)]))
        self.dir.mkdir(parents=True, exist_ok=True)
        name = self.run_dir.name
        if self.swept:  # the swept settings in the name, as W&B's grouping reads it
            name += " [" + ",".join(f"{k}={v}" for k, v in self.swept.items()) + "]"
        try:
            self.run = wandb.init(
                project=self.project,
                entity=self.entity,
                group=self.group,
                tags=tags,
                job_type=self.job_type,
                name=name,
                id=self._run_id(),
                resume="allow",  # a resumed run folder continues its W&B run
                # the swept settings also as flat keys, for W&B's grouping and parallel plots
                config={**self.config, **{f"swept/{k}": v for k, v in self.swept.items()}},
                dir=str(self.dir),
                mode=self.mode,
                reinit="create_new",  # a new run per sink: multirun jobs never share one
                settings=wandb.Settings(init_timeout=self.init_timeout, silent=self.silent),
            )
        except Exception as error:
            if self.mode == "online":  # the server is out of reach: don't wait on every run
                _unreachable = True
            _warn(f"W&B run did not start ({_one_line(error)}); {FILES_ONLY}")

    def _run_id(self) -> str:
        """The W&B run id of this run folder: kept in the folder, so that a resumed run
        (same folder, a checkpoint) logs into the same W&B run; a fresh start gets a new one."""
        path = self.run_dir / WANDB_ID
        if self._resumed_from and path.exists():
            return path.read_text().strip()
        run_id = uuid.uuid4().hex[:12]
        io.write_text(path, run_id + "\n")
        return run_id

    @contextlib.contextmanager
    def _guard(self, what: str, drop: bool = True) -> Iterator[None]:
        """A W&B error while logging: one warning and (`drop`) the W&B run given up on;
        training never sees it."""
        try:
            yield
        except Exception as error:
            if not drop:
                _warn(f"W&B failed {what} ({_one_line(error)})")
                return
            _warn(f"W&B failed {what} ({_one_line(error)}); {FILES_ONLY}")
            run, self.run = self.run, None
            if run is not None:
                with contextlib.suppress(Exception):
                    run.finish(exit_code=1)

    def _figures(self) -> dict[str, Any]:
        """density.csv drawn small (1-D: curves, 2-D: heat maps), and samples.png if any."""
        images: dict[str, Any] = {}
        density = self.run_dir / DENSITY
        if density.exists():
            images["density"] = self._wandb.Image(density_image(pd.read_csv(density)))
        samples = self.run_dir / SAMPLES
        if samples.exists():
            images["samples"] = self._wandb.Image(str(samples))
        return images


def density_image(table: pd.DataFrame) -> np.ndarray:
    """An RGB array of the fitted (and true) density: 1-D curves, or 2-D heat maps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if "y" not in table:
        fig = Figure(figsize=(4.0, 2.8), dpi=80)
        ax = fig.add_subplot()
        if "target" in table:
            ax.fill_between(table["x"], table["target"], color="0.85", label="target")
        ax.plot(table["x"], table["model"], color="C0", lw=1.3, label="model")
        mass = table["target" if "target" in table else "model"].to_numpy()
        cdf = np.cumsum(mass) / max(float(mass.sum()), 1e-300)  # show where the mass is
        x = table["x"].to_numpy()
        lo, hi = x[np.searchsorted(cdf, 0.001)], x[min(np.searchsorted(cdf, 0.999), len(x) - 1)]
        if hi > lo:
            ax.set_xlim(lo - 0.15 * (hi - lo), hi + 0.15 * (hi - lo))
        ax.set_xlabel("x")
        ax.set_ylabel("density")
        ax.legend(frameon=False, fontsize=8)
    else:
        panels = [c for c in ("data", "target", "model") if c in table]
        side = round(len(table) ** 0.5)
        extent = (table["x"].min(), table["x"].max(), table["y"].min(), table["y"].max())
        fig = Figure(figsize=(2.4 * len(panels), 2.6), dpi=80)
        for i, column in enumerate(panels):
            ax = fig.add_subplot(1, len(panels), i + 1)
            grid = table[column].to_numpy().reshape(side, side).T  # rows = y
            top = max(float(np.nanpercentile(grid, 99.8)), 1e-12)
            ax.imshow(grid, origin="lower", extent=extent, cmap="magma", vmin=0, vmax=top)
            ax.set_title(column, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _names(info: dict[str, Any]) -> list[str]:
    """The run's target, model and method names: always among its tags."""
    return [str(info[k]) for k in ("target", "model", "method") if info.get(k) is not None]


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def log_sweep_report(
    report: Any,
    sweep_dir: Path,
    *,
    project: str | None = None,
    entity: str | None = None,
    group: str | None = None,
    mode: str | None = None,
    init_timeout: float = 30.0,
) -> Any:
    """One W&B run per sweep (in its group, job_type "report") holding the comparison: the
    summary, paired, leaderboard (ranks, wins) and runs tables as W&B Tables, mean ranks
    and the Friedman p in its summary, the report's figures as images, runs.csv and the
    report files as an artifact. Returns the finished run, or None when W&B is not there."""
    mode = resolve_mode(mode)
    wandb = None if mode == "disabled" else _import_wandb()
    if wandb is None:
        return None
    sweep_dir = Path(sweep_dir)
    try:
        run = wandb.init(
            project=project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
            entity=entity,
            group=group,
            job_type="report",
            name=f"report {sweep_dir.name}",
            dir=os.environ.get("WANDB_DIR") or str(sweep_dir),
            mode=mode,
            reinit="create_new",
            settings=wandb.Settings(init_timeout=init_timeout, silent=True),
        )
    except Exception as error:
        _warn(f"W&B report run did not start ({_one_line(error)})")
        return None
    try:
        logged: dict[str, Any] = {}
        for name in ("summary", "paired", "runs", "ranks", "wins"):
            path = report.out_dir / f"{name}.csv"
            if path.exists():
                frame = pd.read_csv(path)
                logged[f"report/{name}"] = wandb.Table(dataframe=frame.astype(object))
        for path in report.files:
            if Path(path).suffix == ".png":
                logged[f"figures/{Path(path).stem}"] = wandb.Image(str(path))
        run.log(logged)
        artifact = wandb.Artifact(f"report-{_safe(sweep_dir.name)}", type="report")
        for path in report.files:
            artifact.add_file(str(path))
        run.log_artifact(artifact)
        run.summary.update({"runs": report.n_runs, "ok": report.n_ok})
        board = getattr(report, "leaderboard", None)
        if board is not None:  # the leaderboard's numbers, one summary key each
            run.summary.update(
                {f"mean_rank/{method}": float(rank) for method, rank in board.mean_ranks.items()}
            )
            run.summary.update({"friedman_p": board.friedman_p, "cells": len(board.ranks)})
        run.finish()
    except Exception as error:
        _warn(f"W&B failed logging the sweep report ({_one_line(error)})")
        with contextlib.suppress(Exception):
            run.finish(exit_code=1)
    return run


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
