"""Prints this folder's tables: per training seed and model, the test metrics averaged over the
evaluation seeds, then the mean ± std over training seeds and each DEQ's lead on each seed.

Run from the repository root: `PYTHONPATH=. python benchmarks/results/vae-mnist-5000/summarise.py`.
A run folder holds `eval.json` (evaluation seed = training seed), `eval-seed{1,2}.json` and, for a
DEQ, `exact-derivatives-eval.json` (the same checkpoint scored with exact derivatives at evaluation
seed = training seed). Two comparisons:
- "K = 2": `seed<k>/deq` (configs/vae_deq.py, phantom K = 2) against `seed<k>/baseline`;
- "K = 5": `phantom-K5/seed<k>/deq` against the baseline trained on the same machine:
  `phantom-K5/seed<k>/baseline` where there is one, else `seed<k>/baseline`;
- "K = 5, trained on to 7000 iterations": `to-7000/seed<k>/{baseline,deq}`, the K = 5 comparison's
  runs resumed from their 5000-step checkpoints (evaluated at evaluation seed = training seed only).
"""
import json
import pathlib

from benchmarks.paper_tables import summarise

FOLDER = pathlib.Path(__file__).resolve().parent
K5 = FOLDER / "phantom-K5"
TO_7000 = FOLDER / "to-7000"
MODELS = ("baseline", "deq")
# (eval.json field, heading, True if higher is better), averaged over the evaluation seeds
EVAL_SEED_METRICS = (("test_ssm_vr_loss", "test SSM-VR loss", False), ("test_elbo", "test ELBO", True))
EXACT_SSM = ("exact_ssm_vr_loss", "test SSM-VR loss, exact derivatives (eval seed = training seed)", False)
RUN_METRICS = (("test_recon_nll", "test recon. NLL", False), ("mnist_classifier_fd", "classifier FD", False),
               ("train_time_per_step_ms", "ms / step", False), ("train_peak_memory_mib", "peak RSS MiB", False))
LEAD_METRICS = (EVAL_SEED_METRICS[0], EXACT_SSM, EVAL_SEED_METRICS[1])


def load(folder: pathlib.Path) -> dict[str, float]:
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


def training_seeds(folder: pathlib.Path) -> list[int]:
    """The training seeds k of `folder`'s `seed<k>` subfolders, in order."""
    return sorted(int(p.name[4:]) for p in folder.glob("seed*") if p.is_dir())


def comparisons() -> dict[str, dict[int, dict[str, pathlib.Path]]]:
    """Per comparison and training seed, the run folders of the baseline and the DEQ."""
    k5 = {}
    for seed in training_seeds(K5):
        own_baseline = K5 / f"seed{seed}/baseline"
        baseline = own_baseline if own_baseline.is_dir() else FOLDER / f"seed{seed}/baseline"
        k5[seed] = {"baseline": baseline, "deq": K5 / f"seed{seed}/deq"}
    return {
        "K = 2": {seed: {m: FOLDER / f"seed{seed}/{m}" for m in MODELS} for seed in training_seeds(FOLDER)},
        "K = 5": k5,
        "K = 5, trained on to 7000 iterations": {
            seed: {m: TO_7000 / f"seed{seed}/{m}" for m in MODELS} for seed in training_seeds(TO_7000)},
    }


def cell(numbers: dict[str, float], field: str) -> str:
    """A number to two decimals, or a dash where the run has none."""
    return f"{numbers[field]:.2f}" if field in numbers else "—"


def print_comparison(name: str, runs_by_seed: dict[int, dict[str, pathlib.Path]]) -> None:
    """The per-seed table, the mean ± std over training seeds and the DEQ's lead per seed."""
    runs = {(seed, model): load(folder) for seed, models in runs_by_seed.items() for model, folder in models.items()}
    seeds = list(runs_by_seed)
    fields = (*EVAL_SEED_METRICS, EXACT_SSM, *RUN_METRICS)
    print(f"### DEQ with phantom {name}\n")
    print("| training seed | model | run | eval seeds | " + " | ".join(h for _, h, _ in fields) + " |")
    print("|---" * (4 + len(fields)) + "|")
    for seed, model in runs:
        folder = runs_by_seed[seed][model].relative_to(FOLDER)
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


def main() -> None:
    """Prints every comparison that has runs."""
    for name, runs_by_seed in comparisons().items():
        if runs_by_seed:
            print_comparison(name, runs_by_seed)


if __name__ == "__main__":
    main()
