"""Prints this folder's tables: per training seed and model, the test metrics averaged over the
evaluation seeds, then the mean ± std over training seeds and the DEQ's lead on each seed.

Run from the repository root: `PYTHONPATH=. python benchmarks/results/vae-mnist-5000/summarise.py`.
It reads `seed<k>/<model>/eval.json` (evaluation seed = training seed) and `eval-seed{1,2}.json`.
"""
import json
import pathlib

from benchmarks.paper_tables import summarise

FOLDER = pathlib.Path(__file__).resolve().parent
MODELS = ("baseline", "deq")
# (eval.json field, heading, True if higher is better)
EVAL_SEED_METRICS = (("test_ssm_vr_loss", "test SSM-VR loss", False), ("test_elbo", "test ELBO", True))
RUN_METRICS = (("test_recon_nll", "test recon. NLL", False), ("mnist_classifier_fd", "classifier FD", False),
               ("train_time_per_step_ms", "ms / step", False), ("train_peak_memory_mib", "peak RSS MiB", False))


def load(seed_folder: pathlib.Path, model: str) -> dict[str, float]:
    """One trained model's numbers: the eval-seed metrics averaged over every eval*.json, the rest
    from its own eval.json."""
    evaluations = {p.name: json.loads(p.read_text()) for p in (seed_folder / model).glob("eval*.json")}
    numbers = {field: summarise([e[field] for e in evaluations.values()])["mean"]
               for field, _, _ in EVAL_SEED_METRICS}
    numbers.update({field: evaluations["eval.json"][field] for field, _, _ in RUN_METRICS})
    numbers["n_eval_seeds"] = len(evaluations)
    return numbers


def main() -> None:
    """Prints the per-seed table, the mean ± std over training seeds and the DEQ's lead per seed."""
    seeds = sorted(int(p.name[4:]) for p in FOLDER.glob("seed*") if p.is_dir())
    runs = {(seed, model): load(FOLDER / f"seed{seed}", model) for seed in seeds for model in MODELS}
    fields = EVAL_SEED_METRICS + RUN_METRICS
    print("| training seed | model | eval seeds | " + " | ".join(h for _, h, _ in fields) + " |")
    print("|---" * (3 + len(fields)) + "|")
    for (seed, model), numbers in runs.items():
        cells = [f"{numbers[field]:.2f}" for field, _, _ in fields]
        print(f"| {seed} | {model} | {numbers['n_eval_seeds']} | " + " | ".join(cells) + " |")
    print()
    print("| model | " + " | ".join(f"{h} (mean ± std over {len(seeds)} training seeds)"
                                     for _, h, _ in EVAL_SEED_METRICS) + " |")
    print("|---" * (1 + len(EVAL_SEED_METRICS)) + "|")
    for model in MODELS:
        cells = []
        for field, _, _ in EVAL_SEED_METRICS:
            stats = summarise([runs[seed, model][field] for seed in seeds])
            cells.append(f"{stats['mean']:.2f} ± {stats['std']:.2f}")
        print(f"| {model} | " + " | ".join(cells) + " |")
    print()
    print("| training seed | " + " | ".join(f"DEQ lead in {h}" for _, h, _ in EVAL_SEED_METRICS) + " |")
    print("|---" * (1 + len(EVAL_SEED_METRICS)) + "|")
    for seed in seeds:
        leads = []
        for field, _, higher_is_better in EVAL_SEED_METRICS:
            lead = runs[seed, "deq"][field] - runs[seed, "baseline"][field]
            leads.append(f"{lead if higher_is_better else -lead:+.2f}")
        print(f"| {seed} | " + " | ".join(leads) + " |")


if __name__ == "__main__":
    main()
