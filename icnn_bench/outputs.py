"""The run folder's files besides the metric streams (sinks): the config, the final weights,
densities on a grid, samples, decoded samples. Every file is written atomically."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from icnn_bench import io
from icnn_bench.log_z.quadrature import midpoint_grid
from icnn_bench.models.base import DensityModel
from icnn_bench.run_folder import DENSITY, DWELL, SAMPLES, SAMPLES_CSV, TRANSPORT_MAP, WEIGHTS
from icnn_bench.targets import Split, Target


def write_dwell(run_dir: Path, rows: list[dict[str, float]]) -> None:
    if rows:
        io.write_csv(Path(run_dir) / DWELL, pd.DataFrame(rows))


def save_model(model: DensityModel, run_dir: Path, target: Target, split: Split) -> None:
    """weights.pt, and the pictures' data: the density on a grid (d <= 2), decoded samples."""
    io.save_torch(
        run_dir / WEIGHTS,
        {
            # every parameter and buffer (e.g. a fitted proposal), each copied out: in a
            # stacked cell they are views into every seed's stack, which torch would save whole
            "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "pinned": model.pinned_state(),  # the evaluation emission of each method
        },
    )
    if target.dim <= 2 and target.box() is not None:
        io.write_csv(run_dir / DENSITY, density_table(model, target, split.train.cpu()))
    if target.can_decode and model.can_sample:
        write_decoded_samples(model, target, split, run_dir)
    if target.dim == 2:
        rows = split.test[:400]
        mapped = model.map_pairs(rows, target)
        if mapped is not None:
            io.write_csv(run_dir / TRANSPORT_MAP, mapped)


def write_flow_samples(model: DensityModel, run_dir: Path, seed: int) -> None:
    """2000 draws for the pictures of a low-dimensional model that samples exactly."""
    samples = model.sample(2000, torch.Generator().manual_seed(seed))
    io.write_csv(run_dir / SAMPLES_CSV, pd.DataFrame(samples.cpu().numpy()))


def write_decoded_samples(model: DensityModel, target: Target, split: Split, run_dir: Path) -> None:
    """Latent targets: samples of the fitted model started at training rows, decoded next to
    real test images."""
    from icnn_bench.report.figures import digits_figure

    generator = torch.Generator().manual_seed(0)  # the model moves its draws to its device
    samples = model.sample(16, generator, start=split.train[:16])
    title = f"{target.name} d={target.dim}, {model.method_name}: samples from train rows"
    real, sampled = target.decode(split.test[:16]), target.decode(samples)
    digits_figure(real, sampled, run_dir / SAMPLES, title, vmax=getattr(target, "pixel_max", 16.0))


@torch.no_grad()
def density_table(model: DensityModel, target: Target, train: Tensor | None = None) -> pd.DataFrame:
    """The fitted (and true, where known) density on a grid over the box: 600 points in 1-D,
    120 x 120 in 2-D, where a `data` column also holds the training split's histogram."""
    box = target.box()
    per_axis = 600 if target.dim == 1 else 120
    nodes, log_cell = midpoint_grid(box, per_axis**target.dim)
    fitted = model.log_prob(nodes.to(model.device)).cpu().exp()
    truth = target.log_prob(nodes)
    table = {axis: nodes[:, i].numpy() for i, axis in zip(range(target.dim), "xy", strict=False)}
    table["model"] = fitted.numpy()
    if truth is not None:
        table["target"] = truth.exp().numpy()
    if target.dim == 2 and train is not None:
        edges = [np.linspace(lo, hi, per_axis + 1) for lo, hi in box]
        counts, _, _ = np.histogram2d(train[:, 0].numpy(), train[:, 1].numpy(), bins=edges)
        table["data"] = (counts / (len(train) * math.exp(log_cell))).reshape(-1)  # ij order
    return pd.DataFrame(table)
