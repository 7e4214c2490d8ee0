"""21-D tabular targets for convex-potential flows: HEPMASS (files the user supplies,
preprocessed as in MAF) and `tabular21`, an embedded non-Gaussian stand-in with exact density."""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributions as D
from torch import Tensor

from icnn_bench.errors import DataError
from icnn_bench.targets.base import Split, Target, TargetError, seeded_sample

DIM = 21

# --------------------------------------------------------------------------------------------
# tabular21: x = M s, s_i independent standardised 1-D factors, M a fixed well-conditioned matrix
# --------------------------------------------------------------------------------------------

F64 = torch.float64
EULER_GAMMA = 0.5772156649015329

# Two-component Gaussian mixtures (weights, means, standard deviations), before standardising.
MIXTURES: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "bimodal": ((0.5, 0.5), (-1.0, 1.0), (0.45, 0.45)),  # symmetric, two clear modes
    "skewed_mixture": ((0.7, 0.3), (-0.6, 1.4), (0.6, 1.0)),  # one mode, long right shoulder
    "asymmetric_bimodal": ((0.25, 0.75), (-2.0, 0.67), (0.5, 0.7)),  # small mode on the left
    "contaminated": ((0.85, 0.15), (0.0, 0.0), (1.0, 3.0)),  # symmetric, heavy-ish tails
}

# Differential entropies of the MIXTURES above (not standardised), which have no closed form:
# Monte Carlo estimates -mean(log p(u)) over 10^8 float64 draws u of each mixture (torch
# MixtureSameFamily, drawn in chunks of 10^6 after torch.manual_seed(1000 + k) for the k-th
# mixture in the order above), computed once offline; the second number is the standard error
# std(log p(u)) / sqrt(10^8). A midpoint rule on 2*10^6 nodes over +-40 standard deviations
# of each mixture agreed with every estimate to within 2 standard errors.
MIXTURE_ENTROPY: dict[str, tuple[float, float]] = {
    "bimodal": (1.2779335, 6.1e-5),
    "skewed_mixture": (1.4609875, 7.9e-5),
    "asymmetric_bimodal": (1.5077303, 6.9e-5),
    "contaminated": (1.7103385, 1.02e-4),
}

# The 21 factors of tabular21, in order: 12 with closed-form entropy, 9 Gaussian mixtures.
FACTORS = (
    "gumbel",
    "bimodal",
    "laplace",
    "student_t5",
    "skewed_mixture",
    "logistic",
    "loggamma2",
    "asymmetric_bimodal",
    "gumbel",
    "contaminated",
    "student_t5",
    "bimodal",
    "loggamma_half",
    "laplace",
    "skewed_mixture",
    "gumbel",
    "asymmetric_bimodal",
    "logistic",
    "contaminated",
    "loggamma2",
    "bimodal",
)
MIXING_SEED = 2021  # the seed of the generator drawing the two orthogonal factors of M
SCALES = (0.5, 1.5)  # singular values of M: evenly spaced over this range


@dataclass(frozen=True)
class Factor:
    """A 1-D factor s = (u - mean) / std with u drawn from `base`: mean 0, variance 1.

    `base_log_prob` is the log-density of u; `base_entropy` its differential entropy, with a
    Monte Carlo standard error `base_entropy_se` (0 when the entropy is in closed form)."""

    name: str
    base: D.Distribution
    base_log_prob: Callable[[Tensor], Tensor]
    mean: float
    std: float
    base_entropy: float
    base_entropy_se: float = 0.0

    def sample(self, n: int) -> Tensor:
        """n float64 draws from the global RNG (wrap in seeded_sample to fix the stream)."""
        return (self.base.sample((n,)).to(F64) - self.mean) / self.std

    def log_prob(self, s: Tensor) -> Tensor:
        return self.base_log_prob(self.mean + self.std * s) + math.log(self.std)

    @property
    def entropy(self) -> float:
        return self.base_entropy - math.log(self.std)


def _scalar(value: float) -> Tensor:
    return torch.tensor(float(value), dtype=F64)


def make_factor(name: str) -> Factor:
    """The standardised factor of that name (see FACTORS)."""
    if name == "gumbel":  # right-skewed; mean = Euler's gamma, variance pi^2 / 6
        dist = D.Gumbel(_scalar(0.0), _scalar(1.0), validate_args=False)
        return Factor(
            name, dist, dist.log_prob, EULER_GAMMA, math.pi / math.sqrt(6), 1 + EULER_GAMMA
        )
    if name == "laplace":  # sharp peak, exponential tails; variance 2
        dist = D.Laplace(_scalar(0.0), _scalar(1.0), validate_args=False)
        return Factor(name, dist, dist.log_prob, 0.0, math.sqrt(2.0), 1 + math.log(2.0))
    if name == "student_t5":  # polynomial tails; variance 5 / 3
        dist = D.StudentT(_scalar(5.0), validate_args=False)
        return Factor(name, dist, dist.log_prob, 0.0, math.sqrt(5 / 3), float(dist.entropy()))
    if name == "logistic":  # logit of a uniform; variance pi^2 / 3, entropy 2
        uniform = D.Uniform(
            _scalar(torch.finfo(F64).tiny), _scalar(1 - torch.finfo(F64).eps), validate_args=False
        )
        dist = D.TransformedDistribution(uniform, [D.SigmoidTransform().inv], validate_args=False)
        return Factor(name, dist, _logistic_log_prob, 0.0, math.pi / math.sqrt(3), 2.0)
    if name in ("loggamma2", "loggamma_half"):  # u = log g, g ~ Gamma(k, 1): left-skewed
        k = 2.0 if name == "loggamma2" else 0.5
        gamma = D.Gamma(_scalar(k), _scalar(1.0), validate_args=False)
        dist = D.TransformedDistribution(gamma, [D.ExpTransform().inv], validate_args=False)
        k_t = _scalar(k)
        mean = float(torch.special.digamma(k_t))
        std = math.sqrt(float(torch.special.polygamma(1, k_t)))
        entropy = k + math.lgamma(k) - k * mean  # H(g) - E[log g]

        def log_prob(u: Tensor, k: float = k) -> Tensor:
            return k * u - u.exp() - math.lgamma(k)

        return Factor(name, dist, log_prob, mean, std, entropy)
    if name in MIXTURES:
        weights, means, stds = MIXTURES[name]
        dist = D.MixtureSameFamily(
            D.Categorical(probs=torch.tensor(weights, dtype=F64), validate_args=False),
            D.Normal(torch.tensor(means, dtype=F64), torch.tensor(stds, dtype=F64)),
            validate_args=False,
        )
        mean = sum(w * m for w, m in zip(weights, means, strict=True))
        second = sum(w * (s * s + m * m) for w, m, s in zip(weights, means, stds, strict=True))
        entropy, se = MIXTURE_ENTROPY[name]
        return Factor(name, dist, dist.log_prob, mean, math.sqrt(second - mean * mean), entropy, se)
    raise ValueError(f"unknown tabular21 factor {name!r}")


def _logistic_log_prob(u: Tensor) -> Tensor:
    return -u - 2 * torch.nn.functional.softplus(-u)


def _haar_orthogonal(dim: int, generator: torch.Generator) -> Tensor:
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=F64))
    return q * torch.sign(torch.diagonal(r))


class Tabular21(Target):
    """x = M s in 21-D, with s_i independent, standardised (mean 0, variance 1) non-Gaussian
    factors (FACTORS: Gumbel, Laplace, Student-t with 5 dof, logistic, log-gamma and two-
    component Gaussian mixtures) and M = Q1 diag(d) Q2: Q1, Q2 Haar orthogonal matrices from a
    generator seeded with MIXING_SEED, d evenly spaced over [0.5, 1.5] (condition number 3).
    Every marginal has mean 0 and a variance near 1, like standardised HEPMASS, for which it is
    the default stand-in; unlike HEPMASS the truth is known:

        log p(x) = sum_i log p_i((M^-1 x)_i) - log|det M|,   H = sum_i H_i + log|det M|,

    with log|det M| = sum_j log d_j. The mixtures' entropies are Monte Carlo constants, so
    `entropy_se` is the standard error of entropy(). Built in float64."""

    name = "tabular21"
    dim = DIM

    def __init__(self, dim: int = DIM) -> None:
        if dim != DIM or isinstance(dim, bool):
            raise TargetError(f"target tabular21: dim={dim!r}; this target is 21-D only")
        self.factors = [make_factor(name) for name in FACTORS]
        generator = torch.Generator().manual_seed(MIXING_SEED)
        q1 = _haar_orthogonal(DIM, generator)
        q2 = _haar_orthogonal(DIM, generator)
        scales = torch.linspace(*SCALES, DIM, dtype=F64)
        self.mixing = (q1 * scales) @ q2  # M
        self.unmixing = (q2.T / scales) @ q1.T  # M^-1
        self.log_det = float(scales.log().sum())  # log|det M|
        self._entropy = sum(f.entropy for f in self.factors) + self.log_det
        # one constant per mixture type: repeats of a type share (add up) its error
        repeats = Counter(f.name for f in self.factors)
        self.entropy_se = math.sqrt(
            sum((repeats[name] * MIXTURE_ENTROPY[name][1]) ** 2 for name in MIXTURES)
        )

    def sample(self, n: int, seed: int) -> Tensor:
        def draw() -> Tensor:
            return torch.stack([f.sample(n) for f in self.factors], dim=1)

        return (seeded_sample(draw, seed) @ self.mixing.T).float()

    def log_prob(self, x: Tensor) -> Tensor:
        s = x.to(F64) @ self.unmixing.T
        total = sum(f.log_prob(s[:, i]) for i, f in enumerate(self.factors))
        return (total - self.log_det).to(x.dtype)

    def entropy(self) -> float:
        return self._entropy


def tabular21(dim: int = DIM) -> Tabular21:
    return Tabular21(dim)


# --------------------------------------------------------------------------------------------
# hepmass: the UCI files, preprocessed as in MAF (Papamakarios et al. 2017)
# --------------------------------------------------------------------------------------------

TRAIN_FILE, TEST_FILE = "1000_train.csv", "1000_test.csv"
# Header names per file: the real files' layout as MAF's code implies it (a train header of
# 27 or 28 names, the test file one more; pandas drops data fields past the header, as in
# MAF's read), and the 29-name layout '# label', f0..f26, mass.
COLUMNS = (27, 28, 29)
MAX_REPEATS = 5  # a feature whose smallest value occurs more often than this is dropped
SOURCES = (
    "the UCI repository (https://archive.ics.uci.edu/dataset/347/hepmass) or the MAF "
    "preprocessed-data archive on Zenodo (record 1161203, https://zenodo.org/record/1161203)"
)


@dataclass(frozen=True)
class _Prepared:
    train: np.ndarray  # float32 (rows, 21): the first 90% of the signal rows of 1000_train.csv
    val: np.ndarray  # the last 10%
    test: np.ndarray


# The last folder read, keyed by its files' (path, size, mtime): a sweep's runs share one read.
_LAST: dict[tuple, _Prepared] = {}


class Hepmass(Target):
    """HEPMASS (UCI; Baldi et al. 2016) as in MAF: the signal rows of 1000_train.csv and
    1000_test.csv, standardised with the train file's mean and std, less the features whose
    smallest standardised value repeats more than 5 times (discrete features and the constant
    mass), leaving 21. Validation is the last 10% of the train file's signal rows.

    A fixed data set: the split does not depend on the seed (no shuffling), so every seed sees
    the same rows; integer data sizes take the first n rows of each part. The truth is
    unknown: no log_prob, entropy or box. The files are read at split(), not here."""

    name = "hepmass"
    dim = DIM

    can_sample = False  # a fixed data set, read from files

    def __init__(self, data_dir: str | os.PathLike | None = None) -> None:
        if data_dir is not None and not isinstance(data_dir, str | os.PathLike):
            raise TargetError(f"target hepmass: data_dir={data_dir!r} must be a folder path")
        self.data_dir = data_dir
        self._prepared: _Prepared | None = None

    def sample(self, n: int, seed: int) -> Tensor:
        raise TargetError("hepmass is a fixed data set; it cannot draw new samples")

    def check_available(self) -> None:
        self._paths()

    def split(self, seed: int, n_train: int | None, n_val: int | None, n_test: int | None) -> Split:
        """The fixed MAF split (`seed` is ignored); None sizes take whole parts."""
        sizes = {"n_train": n_train, "n_val": n_val, "n_test": n_test}
        for key, n in sizes.items():
            if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n <= 0):
                raise TargetError(
                    f"data.{key}={n!r} must be a positive integer, or null for the whole "
                    "hepmass part"
                )
        data = self.load()
        parts = []
        for (key, n), rows in zip(sizes.items(), (data.train, data.val, data.test), strict=True):
            if n is not None and n > len(rows):
                raise TargetError(
                    f"data.{key}={n} exceeds the {len(rows)} rows of hepmass's "
                    f"{key[2:]} part; use at most {len(rows)}, or null for all"
                )
            parts.append(torch.from_numpy(rows[:n].copy()))  # a copy: the cache stays intact
        return Split(*parts)

    def load(self) -> _Prepared:
        """Read and preprocess the two files once (per instance, and per folder state)."""
        if self._prepared is None:
            train_path, test_path = self._paths()
            key = tuple(
                (str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in (train_path, test_path)
            )
            if key not in _LAST:
                prepared = _prepare(train_path, test_path)
                _LAST.clear()
                _LAST[key] = prepared
            self._prepared = _LAST[key]
        return self._prepared

    def _paths(self) -> tuple[Path, Path]:
        wanted = f"{TRAIN_FILE} and {TEST_FILE}"
        advice = (
            f"the data cannot be downloaded at run time: get the HEPMASS files from {SOURCES}, "
            "and pass data_dir=/path/to/hepmass"
        )
        if self.data_dir is None:
            raise DataError(f"target hepmass needs data_dir, a folder holding {wanted}; {advice}")
        folder = Path(self.data_dir).expanduser().absolute()
        if not folder.is_dir():
            raise DataError(
                f"target hepmass: no folder {folder} (expected {wanted} in it); {advice}"
            )
        paths = []
        for file in (TRAIN_FILE, TEST_FILE):
            path = folder / file
            if not path.is_file() and (folder / f"{file}.gz").is_file():
                path = folder / f"{file}.gz"  # as distributed by UCI; pandas reads it as is
            paths.append(path)
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise DataError(
                f"target hepmass: {' and '.join(missing)} not found in {folder} (expected "
                f"{wanted}); {advice}"
            )
        return paths[0], paths[1]


def _prepare(train_path: Path, test_path: Path) -> _Prepared:
    """MAF's preprocessing, step by step (datasets/hepmass.py of the MAF code)."""
    train = _signal_rows(_read(train_path), train_path)
    test_frame = _read(test_path)
    # MAF drops the test file's last column (and only the test file's): "the data set is
    # messed up". Columns are matched by name below, so only the train file's order counts.
    test_frame = test_frame.drop(columns=test_frame.columns[-1])
    test = _signal_rows(test_frame, test_path)
    if len(train) < 10:
        raise DataError(
            f"{train_path}: only {len(train)} signal rows; a 90/10 train/validation split "
            "needs at least 10"
        )
    mean, std = train.mean(), train.std()  # ddof=1, as pandas does by default
    # A constant column (std 0) is dropped below: its single value repeats on every row. (MAF
    # divides by its std as is; 0/0 would make it NaN.)
    constant = std == 0
    standard = (train - mean) / std.where(~constant, 1.0)
    kept = [
        name
        for name in standard.columns
        if not constant[name] and _smallest_value_count(standard[name]) <= MAX_REPEATS
    ]
    if len(kept) != DIM:
        raise DataError(
            f"hepmass preprocessing left {len(kept)} columns of {train_path.name}, not 21 "
            f"(kept: {', '.join(map(str, kept))}); the files do not look like HEPMASS "
            f"{TRAIN_FILE}/{TEST_FILE}"
        )
    absent = [name for name in kept if name not in test.columns]
    if absent:
        raise DataError(
            f"{test_path}: lacks the column(s) {', '.join(map(repr, absent))} of {train_path.name}"
        )
    test = (test[kept] - mean[kept]) / std[kept]
    rows = standard[kept].to_numpy(np.float32)
    n_val = int(0.1 * len(rows))
    return _Prepared(
        train=rows[: len(rows) - n_val],
        val=rows[len(rows) - n_val :],
        test=test.to_numpy(np.float32),
    )


def _smallest_value_count(column: pd.Series) -> int:
    """How often the column's smallest value occurs (MAF: the first count of the Counter's
    items sorted by value)."""
    values = column.to_numpy()
    return int((values == values.min()).sum())


def _read(path: Path) -> pd.DataFrame:
    """The CSV as a frame, or a one-line DataError naming the file and what is wrong."""
    try:
        with warnings.catch_warnings():  # a header shorter than the rows: fields dropped, as MAF
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            frame = pd.read_csv(path, index_col=False, skip_blank_lines=False, low_memory=False)
    except pd.errors.ParserError as error:
        detail = str(error).strip().splitlines()[-1]
        detail = detail.split("C error: ", 1)[-1]  # e.g. "Expected 29 fields in line 7, saw 31"
        raise DataError(f"{path}: not a well-formed CSV: {detail}") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except (UnicodeDecodeError, OSError, EOFError) as error:
        raise DataError(f"{path}: cannot be read as CSV text ({error})") from None
    if len(frame.columns) not in COLUMNS:
        shown = ", ".join(map(str, frame.columns[:6])) + (", ..." if len(frame.columns) > 6 else "")
        raise DataError(
            f"{path}: expected HEPMASS's layout, a header of 27 to 29 names ('# label', "
            f"f0, ..., [mass]); found {len(frame.columns)} columns: {shown}"
        )
    if sum(map(_is_number, frame.columns)) > len(frame.columns) // 2:  # data, not names
        raise DataError(f"{path}: the first line should be the header ('# label,f0,...,mass')")
    if len(frame) and frame.apply(pd.to_numeric, errors="coerce").isna().all().all():
        raise DataError(f"{path}: holds no numbers (every value is NaN or empty)")
    # blank lines are rows of NaN; dropping them keeps the other rows' line numbers
    return frame.dropna(how="all")


def _is_number(text: object) -> bool:
    try:
        float(str(text))
    except ValueError:
        return False
    return True


def _signal_rows(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Rows labelled 1, without the label column; every value checked to be a finite number.

    Row index i of `frame` is line i + 2 of the file (line 1 is the header)."""
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
            # as text: pandas would read True/False as booleans, and count them as numbers
            numbers = pd.to_numeric(column.astype(str).where(column.notna()), errors="coerce")
            bad = numbers.isna() & column.notna()
            if bad.any():
                row = bad.idxmax()
                raise DataError(
                    f"{path}: line {row + 2}: column {name!r} holds a non-numeric value "
                    f"{str(column[row])!r}"
                )
            column = frame[name] = numbers.astype(np.float64)
        missing = ~np.isfinite(column.to_numpy(np.float64))
        if missing.any():
            row = frame.index[missing.argmax()]
            value = float(column[row])
            what = "has no value" if math.isnan(value) else f"is not finite ({value})"
            raise DataError(f"{path}: line {row + 2}: column {name!r} {what}")
    label = frame.columns[0]
    signal = frame[frame[label] == 1].drop(columns=label)
    if signal.empty:
        raise DataError(f"{path}: no signal rows (column {label!r} is never 1)")
    return signal.astype(np.float64)


def hepmass(data_dir: str | os.PathLike | None = None) -> Hepmass:
    return Hepmass(data_dir)
