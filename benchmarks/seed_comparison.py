"""Baseline against DEQ over training seeds: the tables of a seed study such as
benchmarks/results/vae-mnist-5000/ (`python -m benchmarks.paper_tables seeds --study=FOLDER`).

A study folder holds `seed<k>/{baseline,deq}/` run folders, and may hold sub-folders with more such
runs (another DEQ setting, or the same runs trained on). A run folder holds `eval.json` (evaluation
seed = training seed), optionally `eval-seed<e>.json` (other evaluation seeds) and, for a DEQ,
`exact-derivatives-eval.json` (the same checkpoint scored with exact derivatives). Printed per
comparison: each run's test metrics (the eval-seed metrics averaged over its evaluation seeds), the
mean ± std over training seeds, and the DEQ's lead on each seed.
"""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks.paper_tables import summarise

MODELS = ("baseline", "deq")
# (eval.json field, heading, True if higher is better), averaged over the evaluation seeds
EVAL_SEED_METRICS = (("test_ssm_vr_loss", "test SSM-VR loss", False), ("test_elbo", "test ELBO", True))
EXACT_SSM = ("exact_ssm_vr_loss", "test SSM-VR loss, exact derivatives (eval seed = training seed)", False)
RUN_METRICS = (("test_recon_nll", "test recon. NLL", False), ("mnist_classifier_fd", "classifier FD", False),
               ("train_time_per_step_ms", "ms / step", False), ("train_peak_memory_mib", "peak RSS MiB", False))
LEAD_METRICS = (EVAL_SEED_METRICS[0], EXACT_SSM, EVAL_SEED_METRICS[1])


def load(folder: Path) -> dict[str, float]:
    """One trained model's numbers: the eval-seed metrics averaged over its evaluations other than
    the exact-derivative one, the rest from its own eval.json. A model without a DEQ has exact
    derivatives already, so its exact SSM-VR loss is its eval.json's."""
    evaluations = {p.name: json.loads(p.read_text()) for p in folder.glob("eval*.json")}
    numbers = {field: summarise([e[field] for e in evaluations.values()])["mean"]
               for field, _, _ in EVAL_SEED_METRICS}
    numbers.update({field: evaluations["eval.json"][field] for field, _, _ in RUN_METRICS})
    exact = folder / "exact-derivatives-eval.json"
    if not any(key.startswith("deq/") for key in evaluations["eval.json"]):
        numbers[EXACT_SSM[0]] = evaluations["eval.json"]["test_ssm_vr_loss"]
    elif exact.exists():
        numbers[EXACT_SSM[0]] = json.loads(exact.read_text())["test_ssm_vr_loss"]
    numbers["n_eval_seeds"] = len(evaluations)
    return numbers


def training_seeds(folder: Path) -> list[int]:
    """The training seeds k of `folder`'s `seed<k>` subfolders, in order."""
    return sorted(int(p.name[4:]) for p in folder.glob("seed*") if p.is_dir())


def comparisons(study: Path) -> dict[str, dict[int, dict[str, Path]]]:
    """Per comparison (the study folder and each sub-folder with `seed<k>/` runs) and training seed, the
    run folders of the baseline and the DEQ. A comparison without its own baseline for a seed (a DEQ
    setting retrained beside the study's baselines) uses the study folder's `seed<k>/baseline`."""
    found = {}
    for folder in [study, *sorted(p for p in study.iterdir() if p.is_dir() and not p.name.startswith("seed"))]:
        runs = {}
        for seed in training_seeds(folder):
            own = folder / f"seed{seed}" / "baseline"
            runs[seed] = {"baseline": own if own.is_dir() else study / f"seed{seed}" / "baseline",
                          "deq": folder / f"seed{seed}" / "deq"}
        if runs:
            found[folder.relative_to(study).as_posix()] = runs
    return found


def cell(numbers: dict[str, float], field: str) -> str:
    """A number to two decimals, or a dash where the run has none."""
    return f"{numbers[field]:.2f}" if field in numbers else "—"


def print_comparison(study: Path, name: str, runs_by_seed: dict[int, dict[str, Path]]) -> None:
    """The per-seed table, the mean ± std over training seeds and the DEQ's lead per seed."""
    runs = {(seed, model): load(folder) for seed, models in runs_by_seed.items() for model, folder in models.items()}
    seeds = list(runs_by_seed)
    fields = (*EVAL_SEED_METRICS, EXACT_SSM, *RUN_METRICS)
    print(f"### `{name}`: {len(runs_by_seed)} training seeds\n")
    print("| training seed | model | run | eval seeds | " + " | ".join(h for _, h, _ in fields) + " |")
    print("|---" * (4 + len(fields)) + "|")
    for seed, model in runs:
        folder = runs_by_seed[seed][model].relative_to(study)
        cells = [cell(runs[seed, model], field) for field, _, _ in fields]
        print(f"| {seed} | {model} | `{folder}` | {runs[seed, model]['n_eval_seeds']} | " + " | ".join(cells) + " |")
    print()
    print("| model | " + " | ".join(f"{h} (mean ± std over training seeds)" for _, h, _ in LEAD_METRICS) + " |")
    print("|---" * (1 + len(LEAD_METRICS)) + "|")
    for model in MODELS:
        cells = []
        for field, _, _ in LEAD_METRICS:
            values = [runs[seed, model][field] for seed in seeds if field in runs[seed, model]]
            stats = summarise(values) if values else None
            cells.append(f"{stats['mean']:.2f} ± {stats['std']:.2f} ({stats['n']} seeds)" if stats else "—")
        print(f"| {model} | " + " | ".join(cells) + " |")
    print()
    print("| training seed | " + " | ".join(f"DEQ lead in {h}" for _, h, _ in LEAD_METRICS) + " |")
    print("|---" * (1 + len(LEAD_METRICS)) + "|")
    for seed in seeds:
        leads = []
        for field, _, higher_is_better in LEAD_METRICS:
            if field not in runs[seed, "deq"]:
                leads.append("—")
                continue
            lead = runs[seed, "deq"][field] - runs[seed, "baseline"][field]
            leads.append(f"{lead if higher_is_better else -lead:+.2f}")
        print(f"| {seed} | " + " | ".join(leads) + " |")
    print()


def print_study(study: Path) -> None:
    """Prints every comparison of the study folder that has runs."""
    for name, runs_by_seed in comparisons(study).items():
        print_comparison(study, name, runs_by_seed)
