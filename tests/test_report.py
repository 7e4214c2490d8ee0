"""Aggregation from run-folder files: mean ± std per cell, best marked, failures counted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from icnn_bench.cli import report_main
from icnn_bench.report import label_variants, make_report
from icnn_bench.report.collect import collect_runs
from icnn_bench.report.stats import paired_difference, wilcoxon_exact_pvalue
from icnn_bench.report.tables import (
    comparison_latex,
    comparison_markdown,
    paired_comparisons,
    shown_pairs,
    summarise,
)


def fake_run(root, target, method, seed, status="ok", kl=None, with_result=True):
    run_dir = root / f"{target}-{method}-seed{seed}"
    run_dir.mkdir(parents=True)
    config = {"seed": seed, "target": {"name": target}, "method": {"name": method}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    if with_result:
        result = {
            "target": target,
            "model": "icnn",
            "method": method,
            "seed": seed,
            "status": status,
            "kl": kl,
            "tv": kl,
            "test_nll": kl,
            "error": None if status == "ok" else "boom",
        }
        (run_dir / "result.json").write_text(json.dumps(result))
        pd.DataFrame(
            {
                "step": [0, 10, 20],
                "val_nll": [3.0, 2.0, 1.0 + (kl or 0)],
                "dead_frac": [0.0, 0.1, 0.2],
            }
        ).to_csv(run_dir / "metrics.csv", index=False)
    return run_dir


@pytest.fixture
def sweep(tmp_path):
    for seed, (a, b, c) in enumerate([(0.10, 0.20, 0.05), (0.30, 0.40, 0.07)]):
        fake_run(tmp_path, "gumbel", "pgd", seed, kl=a)
        fake_run(tmp_path, "gumbel", "softplus", seed, kl=b)
        fake_run(tmp_path, "gumbel", "lift", seed, kl=c)
    fake_run(tmp_path, "gumbel", "lift", 2, status="diverged")
    fake_run(tmp_path, "gumbel", "pgd", 2, with_result=False)  # still running
    fake_run(tmp_path, "gumbel", "softplus", 2, status="interrupted")  # Ctrl-C: resumable
    return tmp_path


def test_summary_holds_mean_std_and_counts(sweep):
    make_report(sweep)
    summary = pd.read_csv(sweep / "summary.csv").set_index("method")
    assert summary.loc["pgd", "kl_mean"] == pytest.approx(0.2)
    assert summary.loc["pgd", "kl_std"] == pytest.approx(math.sqrt(0.02))
    assert summary.loc["lift", "kl_n"] == 2
    assert summary.loc["lift", "failed"] == 1
    assert summary.loc["pgd", "running"] == 1
    assert summary.loc["softplus", ["failed", "running", "interrupted"]].tolist() == [0, 0, 1]
    assert summary.loc["softplus", "kl_n"] == 2  # unfinished runs are skipped, not averaged


def test_the_report_says_how_many_runs_it_skipped(sweep):
    assert make_report(sweep).unfinished == {"running": 1, "interrupted": 1}


def test_table_marks_the_best_method_and_counts_failures(sweep):
    report = make_report(sweep)
    table = (sweep / "table.md").read_text()
    assert table == report.table_markdown
    first_section = table.split("\n## ")[1]  # the first metric, maybe split into tables
    rows = [line for line in first_section.splitlines() if line.startswith("| gumbel")]
    cells = ["gumbel"] + [c.strip() for r in rows for c in r.strip("|").split("|")[1:]]
    assert all(len(line) <= 100 for line in first_section.splitlines() if line.startswith("|"))
    assert cells[1].startswith("0.2000 ± 0.1414") and "n=2" not in cells[1]
    assert "Every cell without its own n: 2 seeds (n<3)." in first_section  # said once
    assert "1 running" in cells[1]
    assert not cells[1].startswith("**") and not cells[2].startswith("**")
    assert cells[3].startswith("**0.06000 ± 0.01414**") and "1 failed" in cells[3]


def test_figures_are_written_and_a_second_pass_gives_the_same_tables(sweep):
    make_report(sweep)
    first = {n: (sweep / n).read_text() for n in ("summary.csv", "table.md", "runs.csv")}
    report = make_report(sweep)
    assert {n: (sweep / n).read_text() for n in first} == first
    assert (sweep / "loss_curves.png").stat().st_size > 10_000
    assert sweep / "loss_curves.png" in report.files


def test_report_command_on_an_empty_folder_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        report_main([str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("icnn-bench-report: no run folders") and "\n" not in err


def test_report_command_writes_to_another_folder(sweep, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("out")
    report_main([str(sweep), "--out", str(out)])
    assert (out / "table.md").exists() and not (sweep / "table.md").exists()
    printed = capsys.readouterr().out
    assert "KL(target" in printed
    # the verdict lines are printed too: 2 pairs, lift lower on both seeds vs each baseline
    assert "lift vs pgd: " in printed and "lift vs softplus: " in printed


def test_settings_pool_unless_swept_when_hydra_recorded_the_overrides(tmp_path):
    for seed, lr in ((0, 0.1), (1, 0.2)):
        run_dir = fake_run(tmp_path, "gumbel", "lift", seed, kl=0.1)
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        config["trainer"] = {"lr": lr}
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
        (run_dir / ".hydra").mkdir()
        overrides = [f"seed={seed}"]
        (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    make_report(tmp_path)
    assert list(pd.read_csv(tmp_path / "summary.csv")["method"]) == ["lift"]  # one cell
    for seed, lr in ((0, 0.1), (1, 0.2)):  # now lr was a command-line sweep axis
        path = tmp_path / f"gumbel-lift-seed{seed}" / ".hydra" / "overrides.yaml"
        path.write_text(yaml.safe_dump([f"seed={seed}", f"trainer.lr={lr}"]))
    make_report(tmp_path)
    assert sorted(pd.read_csv(tmp_path / "summary.csv")["method"]) == [
        "lift [trainer.lr=0.1]",
        "lift [trainer.lr=0.2]",
    ]


def tables_of(root, under_test=None):
    """summary, paired (every pair), table.md and table.tex text of a sweep folder, without
    figures."""
    runs = label_variants(collect_runs(root))
    summary, paired = summarise(runs), paired_comparisons(runs, under_test)
    shown = shown_pairs(paired, runs, under_test)
    return (
        summary,
        paired,
        comparison_markdown(summary, "sweep", shown),
        comparison_latex(summary, shown, "sweep"),
    )


def paired_row(paired, target, baseline, metric="kl", method="lift"):
    rows = paired[
        (paired["target"] == target)
        & (paired["method"] == method)
        & (paired["baseline"] == baseline)
        & (paired["metric"] == metric)
    ]
    assert len(rows) == 1
    return rows.iloc[0]


def test_summary_holds_a_t_interval_of_the_mean(sweep):
    summary = tables_of(sweep)[0].set_index("method")
    t_975_1dof = 12.706204736174694  # Student t quantile, from tables
    assert summary.loc["pgd", "kl_ci_low"] == pytest.approx(0.2 - t_975_1dof * 0.1)
    assert summary.loc["pgd", "kl_ci_high"] == pytest.approx(0.2 + t_975_1dof * 0.1)
    assert "t-interval over seeds" in tables_of(sweep)[2]


PGD = [0.30, 0.25, 0.40, 0.35]
LIFT = [0.21, 0.20, 0.28, 0.30]  # lift - pgd = -0.09, -0.05, -0.12, -0.05


@pytest.fixture
def paired_sweep(tmp_path):
    for seed, (pgd, lift) in enumerate(zip(PGD, LIFT, strict=True)):
        fake_run(tmp_path, "gumbel", "pgd", seed, kl=pgd)
        fake_run(tmp_path, "gumbel", "lift", seed, kl=lift)
        fake_run(tmp_path, "gumbel", "maf_reference", seed, kl=0.01)
    fake_run(tmp_path, "gumbel", "pgd", 4, status="failed")  # unpaired: left out
    fake_run(tmp_path, "gumbel", "lift", 4, kl=0.5)
    fake_run(tmp_path, "gumbel", "lift", 5, kl=0.5)  # no pgd run with this seed
    return tmp_path


def test_paired_difference_matches_a_hand_computation(paired_sweep):
    row = paired_row(tables_of(paired_sweep)[1], "gumbel", "pgd")
    differences = [-0.09, -0.05, -0.12, -0.05]
    mean = sum(differences) / 4
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / 3)
    t_975_3dof = 3.182446305284263
    t_statistic = mean / (sd / 2)
    assert (row["n_pairs"], row["method"]) == (4, "lift")
    assert row["mean_diff"] == pytest.approx(-0.0775)
    assert row["ci_low"] == pytest.approx(mean - t_975_3dof * sd / 2)
    assert row["ci_high"] == pytest.approx(mean + t_975_3dof * sd / 2)
    assert t_statistic == pytest.approx(-4.5543, abs=1e-4)
    # two-sided p of t = -4.5543 with 3 dof: 2 * P(T_3 > 4.5543)
    assert row["t_p"] == pytest.approx(_t_two_sided_p(t_statistic, 3), rel=1e-6)
    # all four signs negative: exact two-sided p = 2 / 2^4
    assert row["wilcoxon_p"] == pytest.approx(0.125)
    assert row["verdict"] == "win"
    assert row["method_mean"] == pytest.approx(sum(LIFT) / 4)


def _t_two_sided_p(t: float, dof: int) -> float:
    """Student t tail for 3 dof in closed form: P(|T| > t) = 1 - 2/pi (atan(x) + x/(1+x^2)),
    x = t/sqrt(3)."""
    assert dof == 3
    x = abs(t) / math.sqrt(3)
    return 1 - 2 / math.pi * (math.atan(x) + x / (1 + x**2))


def test_paired_p_values_agree_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    lift = [0.11, 0.35, 0.18, 0.42, 0.27, 0.09]
    base = [0.20, 0.31, 0.29, 0.55, 0.26, 0.23]
    differences = [a - b for a, b in zip(lift, base, strict=True)]
    result = paired_difference(differences)
    assert result["t_p"] == pytest.approx(stats.ttest_rel(lift, base).pvalue)
    expected = stats.wilcoxon(differences, method="exact").pvalue
    assert result["wilcoxon_p"] == pytest.approx(expected)


def test_wilcoxon_exact_by_hand():
    # ranks 1..5; negative ranks sum to 2; P(W- <= 2) = #{{}, {1}, {2}} / 2^5
    assert wilcoxon_exact_pvalue([1.0, -2.0, 3.0, 4.0, 5.0]) == pytest.approx(2 * 3 / 32)
    assert wilcoxon_exact_pvalue([0.0, 0.0, 0.0]) == 1.0
    assert math.isnan(wilcoxon_exact_pvalue([1.0]))


def test_maf_reference_is_a_baseline_and_the_markdown_cell_is_compact(paired_sweep):
    paired, markdown = tables_of(paired_sweep)[1:3]
    lift = paired[paired["method"] == "lift"]
    assert set(lift["baseline"]) == {"pgd", "maf_reference"}
    # every pair is in paired.csv: the reference against pgd too, later column − earlier
    assert set(zip(paired["method"], paired["baseline"], strict=True)) == {
        ("lift", "pgd"),
        ("lift", "maf_reference"),
        ("maf_reference", "pgd"),
    }
    row = next(line for line in markdown.splitlines() if line.startswith("| gumbel | −"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert markdown.count("| target | vs pgd | vs maf_reference |") == 1
    assert cells[1] == "−0.07750 [−0.1317, −0.02334]"  # 4 significant digits; p in paired.csv
    assert "(4 pairs per cell unless marked)" in markdown
    assert "lift vs pgd: 1 win, 0 ties, 0 losses (95% paired t-interval" in markdown


OFFSETS = [0.01, -0.02, 0.015, -0.005, 0.0]  # sum 0: a paired mean difference of 0


def test_wins_ties_and_losses_are_counted_per_target(tmp_path):
    for seed, offset in enumerate(OFFSETS):
        base = 0.5 + 0.1 * seed  # seeds differ a lot; pairing takes that out
        for target, shift in (("better", -0.1), ("worse", 0.1), ("same", 0.0)):
            fake_run(tmp_path, target, "pgd", seed, kl=base)
            fake_run(tmp_path, target, "lift", seed, kl=base + shift + offset)
    paired, markdown, latex = tables_of(tmp_path)[1:]
    verdicts = paired[paired["metric"] == "kl"].set_index("target")["verdict"].to_dict()
    assert verdicts == {"better": "win", "same": "tie", "worse": "loss"}
    line = "lift vs pgd: 1 win, 1 tie, 1 loss (95% paired t-interval over seeds, KL)"
    assert f"- {line}" in markdown
    assert f"% {line}" in latex


def test_fewer_than_two_pairs_give_no_test(tmp_path):
    fake_run(tmp_path, "one", "pgd", 0, kl=0.2)
    fake_run(tmp_path, "one", "lift", 0, kl=0.1)
    fake_run(tmp_path, "one", "lift", 1, kl=0.1)
    fake_run(tmp_path, "none", "pgd", 0, kl=0.2)
    fake_run(tmp_path, "none", "lift", 0, status="diverged")
    paired, markdown = tables_of(tmp_path)[1:3]
    one, none = paired_row(paired, "one", "pgd"), paired_row(paired, "none", "pgd")
    assert (one["n_pairs"], one["verdict"]) == (1, "n<2")
    assert math.isnan(one["t_p"]) and math.isnan(one["ci_low"])
    assert (none["n_pairs"], none["verdict"]) == (0, "n<2")
    assert "| one | −0.1000, n<2 (n=1) |" in markdown
    assert "| none | n<2 (n=0) |" in markdown
    assert "lift vs pgd: 0 wins, 0 ties, 0 losses, 2 with n<2" in markdown


def test_without_a_lift_every_pair_is_compared(tmp_path):
    for seed in range(2):
        fake_run(tmp_path, "gumbel", "pgd", seed, kl=0.1 * (seed + 1))
        fake_run(tmp_path, "gumbel", "softplus", seed, kl=0.2)
    paired, markdown, latex = tables_of(tmp_path)[1:]
    assert set(zip(paired["method"], paired["baseline"], strict=True)) == {("softplus", "pgd")}
    assert "## Paired comparison: softplus − each other method" in markdown
    assert "softplus vs pgd: 0 wins, 1 tie, 0 losses" in markdown and "paired" in latex


def test_the_method_under_test_is_a_setting(tmp_path):
    for seed in range(3):
        for method, kl in (("pgd", 0.3), ("softplus", 0.4), ("lift", 0.2), ("mine", 0.1)):
            fake_run(tmp_path, "gumbel", method, seed, kl=kl + 0.01 * seed * (method == "pgd"))
    paired, markdown = tables_of(tmp_path, under_test="mine")[1:3]
    assert len(paired[paired["metric"] == "kl"]) == 6  # every pair of 4 methods once
    mine = paired[(paired["method"] == "mine") & (paired["metric"] == "kl")]
    assert set(mine["baseline"]) == {"pgd", "softplus", "lift"}
    assert "mine vs lift: 1 win" in markdown and "lift vs pgd" not in markdown
    with pytest.raises(ValueError, match="no method 'yours' in this sweep"):
        tables_of(tmp_path, under_test="yours")


def test_lift_is_compared_with_baselines_of_the_same_swept_setting(tmp_path):
    for seed in range(2):
        for method in ("pgd", "lift"):
            for depth in (0, 2):
                run_dir = tmp_path / f"depth{depth}"
                run_dir = fake_run(run_dir, "gumbel", method, seed, kl=0.1 + seed + depth)
                config = yaml.safe_load((run_dir / "config.yaml").read_text())
                config["model"] = {"depth": depth}
                (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    paired = tables_of(tmp_path)[1]
    assert sorted(set(zip(paired["method"], paired["baseline"], strict=True))) == [
        ("lift [model.depth=0]", "pgd [model.depth=0]"),
        ("lift [model.depth=2]", "pgd [model.depth=2]"),
    ]


def test_a_second_pass_writes_byte_identical_tables(paired_sweep):
    fake_run(paired_sweep, "gumbel", "softplus", 0, with_result=False)  # still running
    names = ("summary.csv", "paired.csv", "table.md", "table.tex")
    report = make_report(paired_sweep)
    assert {paired_sweep / n for n in names} <= set(report.files)
    first = {n: (paired_sweep / n).read_bytes() for n in names}
    make_report(paired_sweep)
    assert {n: (paired_sweep / n).read_bytes() for n in names} == first


def test_one_method_leaves_a_paired_csv_with_just_a_header(tmp_path):
    fake_run(tmp_path, "gumbel", "pgd", 0, kl=0.1)
    make_report(tmp_path)
    lines = (tmp_path / "paired.csv").read_text().splitlines()
    assert lines == [
        "target,method,baseline,metric,n_pairs,method_mean,baseline_mean,mean_diff,"
        "ci_low,ci_high,t_p,wilcoxon_p,verdict"
    ]


def test_latex_escapes_names_and_uses_booktabs(tmp_path):
    for seed in range(2):
        fake_run(tmp_path, "digits_latents", "pgd", seed, kl=0.3 + 0.1 * seed)
        fake_run(tmp_path, "digits_latents", "lift", seed, kl=-0.1 - 0.01 * seed)
        fake_run(tmp_path, "digits_latents", "maf_reference", seed, kl=0.2)
    latex = tables_of(tmp_path)[3]
    assert "digits\\_latents &" in latex and "maf\\_reference" in latex
    assert "digits_latents" not in latex.replace("\\_", "")  # no bare underscore
    assert all(rule in latex for rule in ("\\toprule", "\\midrule", "\\bottomrule"))
    assert "\\textbf{$-$0.1050 $\\pm$ 0.007071}" in latex  # best (lowest) mean in bold
    assert "\\begin{tabular}{lccc}" in latex
    assert latex.count("\\begin{table}") == latex.count("\\end{table}") == 4  # kl, tv, nll, paired
    assert "±" not in latex and "‖" not in latex


def test_a_mixed_sweep_draws_every_target_once(tmp_path):
    from icnn_bench.report.figures import loss_figure

    rows = []
    for target, kl in (("gumbel", True), ("digits_latents_d4", False)):
        for method in ("pgd", "lift"):
            for seed in (0, 1):
                for step in (0, 100, 200):
                    rows.append(
                        {"target": target, "method": method, "seed": seed, "step": step,
                         "variant": "", "run_dir": f"{target}{method}{seed}",
                         "val_nll": 5.0 - step / 100 + seed, "kl": 0.5 / (step + 1) if kl else None}
                    )  # fmt: skip
    made = loss_figure(pd.DataFrame(rows), tmp_path / "loss_curves.png")
    assert made == [tmp_path / "loss_curves.png", tmp_path / "loss_curves_nll.png"]
    assert all(path.stat().st_size > 5_000 for path in made)


def test_a_known_entropy_without_a_grid_draws_nll_minus_entropy(tmp_path):
    from icnn_bench.report.figures import loss_figure, with_entropy_gap

    rows, runs = [], []
    kinds = {
        "gumbel": (True, 1.58),
        "synthetic_d8": (False, 11.0),
        "digits_latents_d4": (False, None),
    }
    for target, (grid, entropy) in kinds.items():
        for method in ("pgd", "lift"):
            for seed in (0, 1):
                run_dir = f"{target}{method}{seed}"
                runs.append({"run_dir": run_dir, "entropy": entropy})
                for step in (0, 100, 200):
                    rows.append(
                        {"target": target, "method": method, "seed": seed, "step": step,
                         "variant": "", "run_dir": run_dir, "val_nll": 12.0 - step / 100 + seed,
                         "kl": 0.5 / (step + 1) if grid else None}
                    )  # fmt: skip
    curves = with_entropy_gap(pd.DataFrame(rows), pd.DataFrame(runs))
    synthetic = curves[curves["target"] == "synthetic_d8"]
    assert (synthetic["nll_minus_entropy"] == synthetic["val_nll"] - 11.0).all()
    assert curves.loc[curves["target"] == "digits_latents_d4", "nll_minus_entropy"].isna().all()
    made = loss_figure(curves, tmp_path / "loss_curves.png")
    assert [p.name for p in made] == [
        "loss_curves.png", "loss_curves_nll_entropy.png", "loss_curves_nll.png"
    ]  # fmt: skip
    assert all(path.stat().st_size > 5_000 for path in made)
    alone = loss_figure(curves[curves["target"] == "synthetic_d8"], tmp_path / "alone.png")
    assert alone == [tmp_path / "alone.png"]  # the first figure made takes the name


def test_a_relative_nll_panel_clips_an_exploited_estimate_and_says_so():
    from icnn_bench.report.figures import relative_limits

    def quartiles(rows):
        return pd.DataFrame(rows, columns=[0.25, 0.5, 0.75], index=range(len(rows)))

    sane = {
        "pgd": quartiles([[12, 13, 14], [5.1, 5.2, 5.3]]),
        "lift": quartiles([[9, 10, 11], [5.0, 5.0, 5.1]]),
    }
    assert relative_limits(sane, offset=5.0) is None  # nothing far out: autoscale
    exploited = {**sane, "lift": quartiles([[-2e10, 10, 1e9], [5.0, 5.0, 5.1]])}
    low, high = relative_limits(exploited, offset=5.0)
    assert low == -1.0 and high == pytest.approx(80.0)  # 10x the highest median (13 - 5)


def test_a_one_panel_figure_wraps_a_long_legend_instead_of_widening(tmp_path):
    import matplotlib.image

    from icnn_bench.report.figures import curve_figure

    methods = ["pgd", "softplus", "lift", "lift_nocond", "lift_noslack", "lift_nostoch"]
    rows = [
        {"target": "gumbel", "method": m, "seed": s, "step": step, "variant": "",
         "kl": (i + 1) / (step + 1)}
        for i, m in enumerate(methods) for s in (0, 1) for step in (0, 100, 200)
    ]  # fmt: skip
    path = curve_figure(pd.DataFrame(rows), "kl", "KL", tmp_path / "one.png", log_y=True)
    width_inches = matplotlib.image.imread(path).shape[1] / 130  # saved at 130 dpi
    assert width_inches < 4.5  # one 3.6-inch panel; six legend entries in a row need ~9


def test_a_short_log_axis_labels_one_two_and_five_as_plain_numbers():
    from icnn_bench.report.figures import _one_two_five

    labels = [_one_two_five(v, 0) for v in (0.2, 0.3, 0.5, 1.0, 2.0, 4.0, 5.0, 20.0, 0.0)]
    assert labels == ["0.2", "", "0.5", "1", "2", "", "5", "20", ""]


def test_packaged_methods_keep_their_hue_and_a_users_method_gets_an_unused_one(
    tmp_path, monkeypatch
):
    from icnn_bench import registry
    from icnn_bench.report.figures import PACKAGED_HUES, method_colours

    before = method_colours()
    assert before["lift"] == "tab:green" and before["pgd"] == "tab:blue"
    (tmp_path / "method").mkdir()
    (tmp_path / "method" / "aaa.yaml").write_text("name: aaa\n_target_: x.Y\n")
    monkeypatch.setattr(registry, "_added", [])
    registry.add_search_dir(Path(tmp_path))
    after = method_colours()
    assert {k: after[k] for k in before} == before  # adding a method moves no one's hue
    assert after["aaa"] not in set(PACKAGED_HUES.values())


def test_a_sweep_over_a_list_valued_setting_reads_back_typed(tmp_path):
    from icnn_bench.api import load_sweep
    from icnn_bench.report import redraw

    for seed in range(2):
        for body in ([8, 8, 12], [16, 16, 24]):
            root = tmp_path / f"body{body[0]}"
            run_dir = fake_run(root, "gumbel", "lift", seed, kl=0.1 + body[0] / 100 + seed)
            config = yaml.safe_load((run_dir / "config.yaml").read_text())
            config["method"]["body"] = body
            (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
            (run_dir / ".hydra").mkdir()
            (run_dir / ".hydra" / "overrides.yaml").write_text(
                yaml.safe_dump([f"seed={seed}", f"method.body=[{','.join(map(str, body))}]"])
            )
    runs = load_sweep(tmp_path)
    assert sorted(map(tuple, runs["method.body"])) == [(8, 8, 12)] * 2 + [(16, 16, 24)] * 2
    assert set(runs["method"]) == {
        "lift [method.body=[8, 8, 12]]",
        "lift [method.body=[16, 16, 24]]",
    }
    make_report(tmp_path)
    written = pd.read_csv(tmp_path / "summary.csv")
    assert len(written) == 2  # two cells, not one cut at the list's commas
    again = redraw(tmp_path)
    assert again.n_runs == 4
    reread = label_variants(collect_runs(tmp_path))
    assert all(isinstance(v, list) for v in reread["method.body"])


def test_a_method_far_off_every_other_is_named_not_drawn_in_the_dimension_figure():
    from icnn_bench.report.figures import _off_scale

    rows = pd.DataFrame(
        [
            {"dim": d, "method_name": m, "test_nll": v * d + seed * 0.1}
            for d in (4, 8, 16)
            for seed in range(3)
            for m, v in (("pgd", 1.3), ("lift", 1.2), ("exp", 1.25), ("negexp", 1e4))
        ]
    )
    assert _off_scale(rows, "test_nll") == ["negexp"]
    rows.loc[rows["method_name"] == "negexp", "test_nll"] = 1.4 * rows["dim"]
    assert _off_scale(rows, "test_nll") == []  # merely the worst: drawn
