"""21-D tabular targets: HEPMASS preprocessing on a fake folder, and tabular21's exact density."""

from __future__ import annotations

import gzip
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributions as D

from icnn_bench.errors import DataError
from icnn_bench.targets import TargetError, build_target
from icnn_bench.targets.tabular import MIXTURES, make_factor

# ------------------------------------------------------------------------------- hepmass

FEATURES = [f"f{i}" for i in range(27)]
HEADER = ["# label", *FEATURES, "mass"]
DISCRETE = {  # few distinct values: their smallest value repeats far more than 5 times
    "f5": [0.0, 1.0, 2.0, 3.0],
    "f9": [0.0, 1.0],
    "f13": [-0.5, 1.5],
    "f17": [0.0, 1.0],
    "f21": [0.0, 1.0],
    "f25": [1.0, 2.0, 3.0],
}
REMOVED = [*DISCRETE, "mass"]
KEPT = [f for f in FEATURES if f not in DISCRETE]


def fake_hepmass(rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """The UCI layout: mixed labels, 6 discrete features, mass 1000 for signal, the rest
    continuous; background rows sit far away (so a leak would show)."""
    label = rng.integers(0, 2, rows)
    frame = pd.DataFrame({"# label": label.astype(float)})
    for name in FEATURES:
        if name in DISCRETE:
            frame[name] = rng.choice(DISCRETE[name], rows)
        else:
            frame[name] = rng.gamma(2.0, 1.0, rows) + np.where(label == 1, 0.0, 50.0)
    frame["mass"] = np.where(label == 1, 1000.0, rng.choice([500.0, 750.0, 1250.0], rows))
    # a continuous feature whose smallest value repeats exactly 5 times is kept (rule: > 5)
    frame.loc[np.flatnonzero(label == 1)[:5], "f3"] = -7.0
    return frame


@pytest.fixture
def hepmass_dir(tmp_path):
    rng = np.random.default_rng(0)
    train, test = fake_hepmass(400, rng), fake_hepmass(150, rng)
    train.to_csv(tmp_path / "1000_train.csv", index=False)
    test.to_csv(tmp_path / "1000_test.csv", index=False)
    return tmp_path, train, test


def test_hepmass_is_maf_preprocessed_signal_rows_in_a_fixed_90_10_split(hepmass_dir):
    folder, train, test = hepmass_dir
    target = build_target("hepmass", {"data_dir": str(folder)})
    split = target.split(0, None, None, None)
    # an independent numpy version of the preprocessing
    signal = train[train["# label"] == 1][KEPT].to_numpy()
    mean, std = signal.mean(0), signal.std(0, ddof=1)
    expected = (signal - mean) / std
    n_val = int(0.1 * len(signal))
    assert (len(split.train), len(split.val)) == (len(signal) - n_val, n_val)
    assert split.train.dtype == torch.float32 and split.train.shape[1] == target.dim == 21
    both = torch.cat([split.train, split.val]).double()
    np.testing.assert_allclose(both.numpy(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        both.mean(0), torch.zeros(21, dtype=torch.float64), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(both.std(0), torch.ones(21, dtype=torch.float64), atol=1e-6, rtol=0)
    test_signal = test[test["# label"] == 1][KEPT].to_numpy()
    assert split.test.shape == (len(test_signal), 21)
    np.testing.assert_allclose(split.test.numpy(), (test_signal - mean) / std, rtol=1e-6, atol=1e-5)
    # the split is fixed: another seed gives the same rows
    torch.testing.assert_close(target.split(7, None, None, None).val, split.val)


def test_hepmass_integer_sizes_take_leading_rows_and_must_fit(hepmass_dir):
    folder, *_ = hepmass_dir
    target = build_target("hepmass", {"data_dir": folder})
    full = target.split(0, None, None, None)
    part = target.split(0, 50, 5, None)
    torch.testing.assert_close(part.train, full.train[:50])
    torch.testing.assert_close(part.val, full.val[:5])
    torch.testing.assert_close(part.test, full.test)
    with pytest.raises(TargetError, match=rf"data\.n_val=500 exceeds the {len(full.val)} rows"):
        target.split(0, 10, 500, 10)
    with pytest.raises(TargetError, match=r"data\.n_train=0 must be a positive integer"):
        target.split(0, 0, None, None)


def test_hepmass_reads_the_gzipped_files_as_distributed(hepmass_dir, tmp_path_factory):
    folder, *_ = hepmass_dir
    zipped = tmp_path_factory.mktemp("gz")
    for name in ("1000_train.csv", "1000_test.csv"):
        with open(folder / name, "rb") as src, gzip.open(zipped / f"{name}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
    plain = build_target("hepmass", {"data_dir": folder}).split(0, None, None, None)
    packed = build_target("hepmass", {"data_dir": zipped}).split(0, None, None, None)
    torch.testing.assert_close(packed.test, plain.test)


def test_truncated_files_are_one_line_errors_naming_the_file(hepmass_dir, tmp_path_factory):
    folder, *_ = hepmass_dir
    train = folder / "1000_train.csv"
    text = train.read_text()
    train.write_text(text[: len(text) // 2])  # cut mid-line, as by a failed copy
    with pytest.raises(DataError) as info:
        build_target("hepmass", {"data_dir": folder}).split(0, None, None, None)
    assert str(train) in str(info.value) and "\n" not in str(info.value)

    zipped = tmp_path_factory.mktemp("gz_cut")
    packed = gzip.compress(text.encode())
    (zipped / "1000_train.csv.gz").write_bytes(packed[: len(packed) // 2])
    shutil.copy(folder / "1000_test.csv", zipped / "1000_test.csv")
    with pytest.raises(DataError) as info:
        build_target("hepmass", {"data_dir": zipped}).split(0, None, None, None)
    message = str(info.value)
    assert "1000_train.csv.gz" in message and "\n" not in message


def test_missing_data_names_the_files_the_folder_and_where_to_get_them(tmp_path):
    target = build_target("hepmass")  # no files are read before split()
    assert target.dim == 21 and target.log_prob(torch.zeros(2, 21)) is None
    assert target.entropy() is None and target.box() is None
    cases = [(None, "needs data_dir"), (tmp_path / "nowhere", f"no folder {tmp_path / 'nowhere'}")]
    (tmp_path / "1000_train.csv").write_text("# label\n")
    cases.append((tmp_path, f"1000_test.csv not found in {tmp_path}"))
    for data_dir, message in cases:
        with pytest.raises(DataError) as info:
            build_target("hepmass", {"data_dir": data_dir}).split(0, None, None, None)
        text = str(info.value)
        assert message in text and "\n" not in text
        for needed in ("1000_train.csv and 1000_test.csv", "cannot be downloaded", "1161203"):
            assert needed in text
        assert "https://archive.ics.uci.edu/dataset/347/hepmass" in text
        assert "data_dir=/path/to/hepmass" in text


@pytest.mark.parametrize(
    "name,line,edit,message",
    [
        ("1000_train.csv", 8, lambda row: row + ",1.0,2.0", "line 8, saw 31"),  # ragged
        ("1000_test.csv", 5, lambda row: row + ",3", "line 5, saw 30"),
        ("1000_train.csv", 10, lambda row: ",".join(row.split(",")[:20]), "line 10: column 'f19'"),
        ("1000_test.csv", 1, lambda row: row + ",extra", "found 30 columns"),
    ],
)
def test_malformed_csv_is_a_one_line_error_naming_the_file(hepmass_dir, name, line, edit, message):
    folder, *_ = hepmass_dir
    path = folder / name
    lines = path.read_text().splitlines()
    lines[line - 1] = edit(lines[line - 1])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        build_target("hepmass", {"data_dir": folder}).split(0, None, None, None)
    text = str(info.value)
    assert str(path) in text and message in text and "\n" not in text


def test_non_numeric_cell_names_the_file_line_and_column(hepmass_dir):
    folder, train, _ = hepmass_dir
    train.astype({"f7": object}).assign(f7=lambda t: t.f7.where(t.index != 11, "n/a?")).to_csv(
        folder / "1000_train.csv", index=False
    )
    with pytest.raises(DataError, match=r"1000_train.csv: line 13: column 'f7' holds a non"):
        build_target("hepmass", {"data_dir": folder}).split(0, None, None, None)


def test_files_that_do_not_reduce_to_21_columns_are_not_hepmass(hepmass_dir):
    folder, train, _ = hepmass_dir
    signal = np.flatnonzero(train["# label"] == 1)
    train.loc[signal[:6], "f4"] = -9.0  # the smallest value now repeats 6 times: dropped
    train.to_csv(folder / "1000_train.csv", index=False)
    with pytest.raises(DataError, match=r"left 20 columns.*do not look like HEPMASS"):
        build_target("hepmass", {"data_dir": folder}).split(0, None, None, None)
    train.assign(**{"# label": 0.0}).to_csv(folder / "1000_train.csv", index=False)
    with pytest.raises(DataError, match="no signal rows"):
        build_target("hepmass", {"data_dir": folder}).split(0, None, None, None)


# ------------------------------------------------------------------------------- tabular21


def _reference_base(name: str) -> D.Distribution:
    """Each factor's unstandardised law, written with torch.distributions only."""
    one = torch.tensor(1.0, dtype=torch.float64)
    if name in MIXTURES:
        weights, means, stds = (torch.tensor(v, dtype=torch.float64) for v in MIXTURES[name])
        return D.MixtureSameFamily(D.Categorical(weights), D.Normal(means, stds))
    return {
        "gumbel": D.Gumbel(0 * one, one),
        "laplace": D.Laplace(0 * one, one),
        "student_t5": D.StudentT(5 * one),
        "logistic": D.TransformedDistribution(D.Uniform(0 * one, one), [D.SigmoidTransform().inv]),
        "loggamma2": D.TransformedDistribution(D.Gamma(2 * one, one), [D.ExpTransform().inv]),
        "loggamma_half": D.TransformedDistribution(D.Gamma(0.5 * one, one), [D.ExpTransform().inv]),
    }[name]


def test_tabular21_factors_are_standardised_densities_with_the_stated_entropy():
    target = build_target("tabular21")
    nodes, half_width = 100_000, 40.0
    h = 2 * half_width / nodes
    s = -half_width + h * (torch.arange(nodes, dtype=torch.float64) + 0.5)
    for factor in {f.name: f for f in target.factors}.values():
        log_p = factor.log_prob(s)
        p = log_p.exp()
        assert float(p.sum() * h) == pytest.approx(1.0, abs=1e-6), factor.name
        assert float((p * s).sum() * h) == pytest.approx(0.0, abs=1e-6), factor.name
        assert float((p * s * s).sum() * h) == pytest.approx(1.0, abs=1e-3), factor.name
        entropy = float(-(p * log_p).nan_to_num().sum() * h)
        assert entropy == pytest.approx(factor.entropy, abs=1e-5 + 4 * factor.base_entropy_se)


def test_tabular21_log_prob_is_the_change_of_variables_of_its_factors():
    target = build_target("tabular21")
    x = target.sample(2000, seed=3).double()
    s = torch.linalg.solve(target.mixing, x.T).T
    expected = -torch.linalg.slogdet(target.mixing).logabsdet
    for i, factor in enumerate(target.factors):
        standardised = D.TransformedDistribution(
            _reference_base(factor.name),
            [D.AffineTransform(-factor.mean / factor.std, 1 / factor.std)],
        )
        expected = expected + standardised.log_prob(s[:, i])
    torch.testing.assert_close(target.log_prob(x), expected, rtol=1e-9, atol=1e-9)
    assert target.log_prob(x.float()).dtype == torch.float32
    assert sorted({f.name for f in target.factors}) == sorted(
        ["gumbel", "laplace", "student_t5", "logistic", "loggamma2", "loggamma_half", *MIXTURES]
    )


def test_tabular21_entropy_matches_the_mean_negative_log_density_of_its_samples():
    target = build_target("tabular21")
    x = target.sample(200_000, seed=11)
    assert x.dtype == torch.float32 and x.shape == (200_000, 21)
    log_p = target.log_prob(x.double())
    se = math.hypot(float(log_p.std()) / math.sqrt(len(log_p)), target.entropy_se)
    assert 0 < target.entropy_se < 1e-3
    assert float(-log_p.mean()) == pytest.approx(target.entropy(), abs=4 * se)
    # covariance M M^T: marginals roughly standardised, like HEPMASS after preprocessing
    cov = torch.cov(x.double().T)
    torch.testing.assert_close(cov, target.mixing @ target.mixing.T, atol=0.05, rtol=0)
    assert bool((cov.diagonal() > 0.4).all() and (cov.diagonal() < 2.0).all())


def test_tabular21_is_seeded_and_leaves_the_global_rng_alone():
    target = build_target("tabular21")
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    a = target.sample(500, seed=0)
    torch.testing.assert_close(torch.rand(3), expected)
    torch.testing.assert_close(a, target.sample(500, seed=0))
    assert not torch.allclose(a, target.sample(500, seed=1))
    split = target.split(0, 100, 20, 30)
    torch.testing.assert_close(split.train, target.split(0, 100, 20, 30).train)


def test_tabular21_is_21_dimensional_only():
    assert build_target("tabular21").box() is None
    with pytest.raises(TargetError, match="dim=4; this target is 21-D only"):
        build_target("tabular21", {"dim": 4})
    with pytest.raises(TargetError, match="target tabular21"):
        build_target("tabular21", {"rho": 0.5})
    with pytest.raises(ValueError, match="unknown tabular21 factor"):
        make_factor("cauchy")


# the layouts of the real files, as MAF's code implies them (see targets/tabular.py)
REAL = [f"f{i}" for i in range(26)]
REAL_DISCRETE = {"f5": [0.0, 1.0, 2.0, 3.0], "f9": [0.0, 1.0], "f13": [-0.5, 1.5]}
REAL_DISCRETE |= {"f17": [0.0, 1.0], "f21": [0.0, 1.0]}


def real_layout(rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """label, f0..f25 (5 of them discrete), mass: 28 fields a row."""
    label = rng.integers(0, 2, rows)
    frame = pd.DataFrame({"# label": label.astype(float)})
    for name in REAL:
        if name in REAL_DISCRETE:
            frame[name] = rng.choice(REAL_DISCRETE[name], rows)
        else:
            frame[name] = rng.gamma(2.0, 1.0, rows) + np.where(label == 1, 0.0, 50.0)
    frame["mass"] = 1000.0
    return frame


def _write(frame: pd.DataFrame, path, header: list[str], extra: bool = False) -> None:
    """`header` as the first line (it may name fewer fields than the rows hold)."""
    body = frame.assign(junk=0.5) if extra else frame
    lines = [",".join(header)] + [",".join(f"{v:.10g}" for v in row) for row in body.to_numpy()]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("layout", ["train_27_names_28_fields", "train_28_test_29"])
def test_hepmass_reads_the_real_layouts_as_maf_does(tmp_path, layout):
    rng = np.random.default_rng(3)
    train, test = real_layout(500, rng), real_layout(200, rng)
    names = ["# label", *REAL, "mass"]
    if layout == "train_27_names_28_fields":  # pandas drops the unnamed field, as in MAF
        _write(train, tmp_path / "1000_train.csv", names[:-1])
        _write(test, tmp_path / "1000_test.csv", names)  # MAF drops its last column
    else:
        _write(train, tmp_path / "1000_train.csv", names)
        _write(test, tmp_path / "1000_test.csv", [*names, "junk"], extra=True)
    split = build_target("hepmass", {"data_dir": str(tmp_path)}).split(0, None, None, None)
    kept = [f for f in REAL if f not in REAL_DISCRETE]
    assert len(kept) == 21 and split.train.shape[1] == 21
    signal = train[train["# label"] == 1][kept]
    mean, std = signal.mean(), signal.std()  # train statistics, ddof 1
    n_val = int(0.1 * len(signal))
    expected = ((signal - mean) / std).to_numpy(np.float32)
    assert (len(split.train), len(split.val)) == (len(signal) - n_val, n_val)
    np.testing.assert_allclose(split.train.numpy(), expected[: len(signal) - n_val], atol=1e-5)
    np.testing.assert_allclose(split.val.numpy(), expected[len(signal) - n_val :], atol=1e-5)
    test_signal = test[test["# label"] == 1][kept]
    np.testing.assert_allclose(
        split.test.numpy(), ((test_signal - mean) / std).to_numpy(np.float32), atol=1e-5
    )


def test_hepmass_in_neither_layout_names_the_columns_it_found(tmp_path):
    pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]}).to_csv(
        tmp_path / "1000_train.csv", index=False
    )
    pd.DataFrame({"a": [1.0], "b": [3.0]}).to_csv(tmp_path / "1000_test.csv", index=False)
    with pytest.raises(DataError, match=r"found 2 columns: a, b$"):
        build_target("hepmass", {"data_dir": str(tmp_path)}).split(0, None, None, None)


def test_an_all_nan_hepmass_file_says_so(hepmass_dir):
    folder, train, _ = hepmass_dir
    (train * np.nan).to_csv(folder / "1000_train.csv", index=False)
    with pytest.raises(DataError, match="holds no numbers"):
        build_target("hepmass", {"data_dir": str(folder)}).split(0, None, None, None)
