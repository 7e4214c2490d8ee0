"""Turn Optuna learning-rate studies (experiment=tune_lr, one per method) into experiment=tuned.

    python scripts/tuned_preset.py outputs/tune_lr/pgd-gumbel-* outputs/tune_lr/softplus-gumbel-* \\
        outputs/tune_lr/lift-gumbel-*

Each study folder holds Hydra's optimization_results.yaml (the best trainer.lr) and its run
folders (which name the method and target). Writes icnn_bench/conf/experiment/tuned.yaml: the
quick comparison with every method at its own tuned learning rate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from icnn_bench import io
from icnn_bench.cli import CONF_DIR

PRESET = CONF_DIR / "experiment" / "tuned.yaml"


def read_study(sweep_dir: Path) -> dict:
    results = sweep_dir / "optimization_results.yaml"
    if not results.exists():
        raise SystemExit(f"{results} is missing: is {sweep_dir} a finished tune_lr sweep?")
    best = yaml.safe_load(results.read_text())
    configs = [yaml.safe_load(p.read_text()) for p in sorted(sweep_dir.glob("*/config.yaml"))]
    if not configs:
        raise SystemExit(f"no run folders below {sweep_dir}")
    return {
        "method": configs[0]["method"]["name"],
        "target": configs[0]["target"]["name"],
        "lr": float(best["best_params"]["trainer.lr"]),
        "val_nll": float(best["best_value"]),
        "trials": len(configs),
        # the study folder by name: presets are committed, machine paths are not
        "folder": sweep_dir.name,
    }


def preset_text(studies: list[dict]) -> str:
    provenance = [
        f"#   {s['method']}: lr {s['lr']:.3g} (best val NLL {s['val_nll']:.4f} on {s['target']}, "
        f"{s['trials']} trials, study {s['folder']})"
        for s in studies
    ]
    rates = "\n".join(f"  {s['method']}: {s['lr']:.6g}" for s in studies)
    methods = ",".join(s["method"] for s in studies)
    return "\n".join(
        [
            "# @package _global_",
            "# The quick comparison with each method at its own tuned learning rate, written by",
            "# scripts/tuned_preset.py from Optuna studies of equal budget (experiment=tune_lr):",
            *provenance,
            "experiment_name: tuned",
            "",
            "tuned_lr:",
            rates,
            "",
            "model:",
            "  width: 64",
            "  log_z:",
            "    train_rule: midpoint  # the rule its committed results were made with",
            "    train_nodes: 512",
            "    eval_nodes: 8000",
            "",
            "trainer:",
            "  steps: 600",
            "  eval_every: 100",
            "  lr: ${tuned_lr.${method.name}}",
            "",
            "hydra:",
            "  mode: MULTIRUN",
            "  sweeper:",
            "    params:",
            "      target: gumbel,laplace,gamma,beta",
            f"      method: {methods}",
            "      seed: 0,1",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", type=Path, nargs="+", help="tune_lr sweep folders")
    parser.add_argument("--out", type=Path, default=PRESET)
    args = parser.parse_args(argv)
    studies = [read_study(folder) for folder in args.sweeps]
    methods = [s["method"] for s in studies]
    if len(set(methods)) != len(methods):
        raise SystemExit(f"one study per method, please; got methods {methods}")
    budgets = {s["trials"] for s in studies}
    if len(budgets) > 1:
        print(f"warning: unequal budgets across methods: {sorted(budgets)} trials", file=sys.stderr)
    io.write_text(args.out, preset_text(studies))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
