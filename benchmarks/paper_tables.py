"""Trains and evaluates paper rows at the budgets of configs/paper_rows.py, and compares with the paper.

    python -m benchmarks.paper_tables run --group=dkef-uci [--jobs=2] [--n_iters=N] [--seeds=0,1,2]
        [--device=cuda --out_dir=benchmarks/results/table4-cuda]
    python -m benchmarks.paper_tables reeval --rows=table2/parkinsons --reason=WHY   # evaluation only, again
    python -m benchmarks.paper_tables seeds --study=benchmarks/results/vae-mnist-5000   # a seed study's tables
    python -m benchmarks.paper_tables report        # -> benchmarks/results/paper-tables.{json,md}
        [--runs_dir=benchmarks/results/table4-cuda --stem=benchmarks/results/table4-cuda/report]

`run` trains each (row, seed) of a group with `main.py` in its own process (one torch thread each,
`--jobs` at a time, on the CPU unless `--device=cuda`), evaluates it (`--mode=eval`), and writes
<out_dir>/<row>-seed<k>.json (default out_dir: the group's folder under benchmarks/results): the row, seed,
budget, exact commands, device, wall time and the whole eval.json (which carries the training's time
per step and peak memory). A (row, seed) whose file exists is skipped; a killed run resumes from its
working directory, and a run asked for more steps than its working directory holds trains on from
there (the file's `resumed_from_step` says from where).

`report` reads every such file of a folder and writes one table per paper table: our mean ± std
over seeds next to the paper's number, row by row, and the targets with met / not met. The
paper's numbers (tables 2–4) are in `PAPER` below, so the committed JSON holds both sides.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.harness import device_name
from benchmarks.report import Target, format_value, goals_table
from configs.paper_rows import GROUPS, ROWS, Group, group_command
from score_matching.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS_DIR = RESULTS / "paper-tables"
REPORT_STEM = RESULTS / "paper-tables"
RUN_ANALYSIS, REPORT_ANALYSIS = "paper-row-run", "paper-tables"


# The paper's numbers: table 2 (mean, std over seeds), table 3 and table 4. Memory in GB as printed.
PAPER: dict[str, dict[str, Any]] = {
    **{
        f"table2/{ds}/{row}": {"test_sm_loss": sm, "test_log_likelihood": ll, "params": params, "memory_gb": mem}
        for ds, values in {
            "parkinsons": {"SM": ([-123.7, 6.6], [-15.1, 0.7], "10k", 1.2),
                           "CP": ([-33.7, 2.8], [-16.9, 1.3], "10k", 0.7),
                           "16-Layer-SM DKEF": ([-127.6, 4.2], [-13.4, 0.6], "51k", 3.6),
                           "DEQ-SM DKEF": ([-152.1, 4.7], [-12.4, 0.7], "10k", 1.3)},
            "redwine": {"SM": ([-27.2, 5.9], [-13.8, 0.7], "9k", 1.0),
                        "CP": ([-12.2, 1.7], [-15.3, 1.5], "9k", 0.6),
                        "16-Layer-SM DKEF": ([-31.6, 5.2], [-12.7, 0.8], "50k", 2.7),
                        "DEQ-SM DKEF": ([-44.5, 4.1], [-12.2, 0.7], "9k", 1.1)},
            "whitewine": {"SM": ([-33.7, 5.2], [-14.8, 0.8], "9k", 1.0),
                          "CP": ([-10.3, 5.1], [-16.1, 0.5], "9k", 0.6),
                          "16-Layer-SM DKEF": ([-35.5, 3.0], [-14.5, 0.6], "50k", 2.7),
                          "DEQ-SM DKEF": ([-45.01, 4.7], [-13.9, 0.5], "9k", 1.1)},
        }.items()
        for row, (sm, ll, params, mem) in values.items()
    },
    "table3/gaussian100/16-Layer-SM DKEF": {"test_sm_loss": -44.92, "test_log_likelihood": -141.25,
                                            "test_fisher_divergence": 6.84, "params": "66k", "memory_gb": 13.2},
    "table3/gaussian100/DEQ-SM DKEF": {"test_sm_loss": -46.03, "test_log_likelihood": -138.86,
                                       "test_fisher_divergence": 6.72, "params": "22k", "memory_gb": 3.9},
    "table3/gaussian100/Ground Truth": {"test_log_likelihood": -137.14},
    "table3/gaussian200/16-Layer-SM DKEF": {"test_sm_loss": -67.58, "test_log_likelihood": -311.84,
                                            "test_fisher_divergence": 32.27, "params": "76k", "memory_gb": 14.8},
    "table3/gaussian200/DEQ-SM DKEF": {"test_sm_loss": -75.03, "test_log_likelihood": -292.56,
                                       "test_fisher_divergence": 25.42, "params": "33k", "memory_gb": 5.6},
    "table3/gaussian200/Ground Truth": {"test_log_likelihood": -283.79},
    "table4/SSM": {"test_sm_loss": [-2455, 52], "test_log_likelihood": [-2058, 60], "params": "15M", "memory_gb": 6.5},
    "table4/DEQ-SSM": {"test_sm_loss": [-2548, 55], "test_log_likelihood": [-1766, 48], "params": "14M",
                       "memory_gb": 5.5},
}
METRICS = ("test_sm_loss", "test_log_likelihood", "test_fisher_divergence", "log_normaliser_std_error",
           "params", "train_peak_memory_mib", "train_time_per_step_ms")


def slug(row: str) -> str:
    """A file-name form of a row name."""
    return row.replace("/", "_").replace(" ", "_").replace("(", "").replace(")", "").replace("=", "")


DEVICES = ("cpu", "cuda")


def _run_logged(commands: list[str], workdir: Path) -> None:
    """Runs the commands one after another with one torch thread, appending to <workdir>.log."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    workdir.parent.mkdir(parents=True, exist_ok=True)
    with workdir.with_suffix(".log").open("a") as log:
        for command in commands:
            subprocess.run(command, shell=True, check=True, cwd=ROOT, env=env, stdout=log, stderr=log)


def _checkpoint_step(workdir: Path) -> int:
    """The step of the working directory's resumable checkpoint, 0 if it has none."""
    path = workdir / "checkpoint-meta.pth"
    return int(load_checkpoint(path)["step"]) if path.exists() else 0


def run_one(row: str, seed: int, group: Group, n_iters: int, runs_root: Path, out_dir: Path,
            device: str = "cpu") -> Path:
    """Trains and evaluates one (row, seed) in fresh processes; writes and returns its result file."""
    out = out_dir / f"{slug(row)}-seed{seed}.json"
    workdir = runs_root / f"{slug(row)}-seed{seed}"
    train = group_command(row, seed, group, n_iters, workdir, device)
    resumed_from = _checkpoint_step(workdir)
    start = time.perf_counter()
    _run_logged([train, f"{train} --mode=eval"], workdir)
    result = {
        "analysis": RUN_ANALYSIS,
        "row": row,
        "seed": seed,
        "budget": {"n_iters": n_iters, **dict(group.overrides)},
        "commands": [train.replace(str(runs_root), "runs/paper-tables"), "(the same) --mode=eval"],
        "resumed_from_step": resumed_from,
        "device_type": device,
        "device": device_name(torch.device(device)),
        "threads": 1,
        "torch": torch.__version__,
        "wall_s": round(time.perf_counter() - start, 1),
        "eval": json.loads((workdir / "eval.json").read_text()),
    }
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return out


def reevaluate_one(path: Path, runs_root: Path, reason: str) -> Path:
    """Re-runs only the evaluation of a result file's run (its working directory under runs_root), e.g.
    after an evaluation change; the new eval.json replaces "eval", the old one is kept as "previous_eval".
    It evaluates the checkpoint at the result's budget, even if the workdir has trained further since."""
    result = json.loads(path.read_text())
    group = next(g for g in GROUPS.values() if result["row"] in g.rows)
    workdir = runs_root / f"{slug(result['row'])}-seed{result['seed']}"
    if not (workdir / "checkpoint-meta.pth").exists():
        raise FileNotFoundError(f"no checkpoint to re-evaluate {path.name} in {workdir}; pass its --runs_root")
    n_iters = result["budget"]["n_iters"]
    command = group_command(result["row"], result["seed"], group, n_iters, workdir, result.get("device_type", "cpu"))
    evaluate = (f"{command} "
                f"--config.eval.checkpoint={n_iters} --mode=eval")
    start = time.perf_counter()
    _run_logged([evaluate], workdir)
    result["previous_eval"] = result["eval"]
    result["eval"] = json.loads((workdir / "eval.json").read_text())
    result["reevaluated"] = {"reason": reason, "wall_s": round(time.perf_counter() - start, 1),
                             "command": evaluate.replace(str(runs_root), "runs/paper-tables")}
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return path


def run_group(name: str, jobs: int, n_iters: int | None, seeds: tuple[int, ...] | None, runs_root: Path,
              device: str = "cpu", out_dir: Path | None = None) -> None:
    """Runs every (row, seed) of group `name` that has no file in out_dir (default: the group's results
    folder), `jobs` at a time."""
    group = GROUPS[name]
    out_dir = out_dir or RESULTS / group.folder
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [(row, seed) for seed in (seeds or group.seeds) for row in group.rows
            if not (out_dir / f"{slug(row)}-seed{seed}.json").exists()]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_one, row, seed, group, n_iters or group.n_iters, runs_root, out_dir, device)
                   for row, seed in todo]
        for future in futures:
            print("wrote", future.result(), flush=True)


def load_runs(folder: Path = RUNS_DIR) -> dict[str, list[dict[str, Any]]]:
    """The result files under `folder`, grouped by row, each group sorted by seed."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        if data.get("analysis") == RUN_ANALYSIS:
            runs.setdefault(data["row"], []).append(data)
    return {row: sorted(found, key=lambda r: r["seed"]) for row, found in runs.items()}


def summarise(values: list[float]) -> dict[str, float]:
    """Mean, sample std (0 for one value) and count."""
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
            "n": len(values)}


def _metric(evaluation: dict[str, Any], metric: str) -> Any:
    """A metric of eval.json; NICE's test LL is the paper's logit-space one."""
    if metric == "test_log_likelihood" and metric not in evaluation:
        return evaluation.get("test_log_likelihood_logit_space")
    return evaluation.get(metric)


def row_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric, mean ± std over the row's seeds (metrics a run lacks are skipped)."""
    summary: dict[str, Any] = {}
    for metric in METRICS:
        values = [_metric(r["eval"], metric) for r in runs if _metric(r["eval"], metric) is not None]
        if values:
            summary[metric] = summarise(values)
    for field in ("true_test_log_likelihood",):
        if field in runs[0]["eval"]:
            summary[field] = runs[0]["eval"][field]
    if "true_test_log_likelihood" in summary and "test_log_likelihood" in summary:
        summary["ll_gap_to_truth"] = summary["true_test_log_likelihood"] - summary["test_log_likelihood"]["mean"]
    return summary


def _mean(summary: dict[str, Any], row: str, metric: str) -> float | None:
    return summary.get(row, {}).get(metric, {}).get("mean")


# The DEQ DKEF rows and the 16-layer rows they are compared with, each pair trained with one optimiser:
# ours (the paper's equation 5), the authors' recipe (their optimiser), and the authors' feature nets with
# our training (linear); with their labels in goals.
DKEF_PAIRS = (
    ("DEQ-SM DKEF", "16-Layer-SM DKEF", "DEQ-SM", "16-layer"),
    ("DEQ-SM DKEF (authors)", "16-Layer-SM DKEF (RMSprop)", "DEQ-SM (authors)", "16-layer (RMSprop)"),
    ("DEQ-SM DKEF (linear)", "16-Layer-SM DKEF", "DEQ-SM (linear)", "16-layer"),
)


# The paper authors' code (their configs/dkef_perf/dkef_exact.yml with the fixed-point feature nets) on our
# table-3 data (gaussian100, seed 0), 1000 steps of batch 32, scored with our evaluation: the bar for
# our port of their DKEF at the same budget.
AUTHORS_CODE_GAUSSIAN100 = {"fisher": 5.65, "gap": 3.54}


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets (the paper's claims for tables 2–4) that the rows present can decide, in `Target.as_dict()` form."""
    found: list[dict[str, Any]] = []

    def add(goal: str, value: float | None, bound: float, at_most: bool) -> None:
        if value is not None:
            found.append(Target(goal, value, bound, at_most).as_dict())

    for deq_row, deep_row, label, deep_label in DKEF_PAIRS:
        for ds in ("parkinsons", "redwine", "whitewine"):
            deq, deep = f"table2/{ds}/{deq_row}", f"table2/{ds}/{deep_row}"
            add(f"{ds}: {label} test LL − {deep_label} test LL", _diff(summary, deq, deep, "test_log_likelihood"), 0.0,
                False)
            if deq_row == "DEQ-SM DKEF":  # the paper's text: DEQ-SM DKEF outperforms CP in SM loss and likelihood
                add(f"{ds}: DEQ-SM test LL − CP test LL", _diff(summary, deq, f"table2/{ds}/CP", "test_log_likelihood"),
                    0.0, False)
        for dim, gap, fisher in ((100, 1.72, 6.72), (200, 8.77, 25.42)):
            deq, deep = f"table3/gaussian{dim}/{deq_row}", f"table3/gaussian{dim}/{deep_row}"
            add(f"gaussian{dim}: {label} LL gap to the true density", summary.get(deq, {}).get("ll_gap_to_truth"), gap,
                True)
            add(f"gaussian{dim}: {label} Fisher divergence", _mean(summary, deq, "test_fisher_divergence"), fisher, True)
            add(f"gaussian{dim}: {label} LL − {deep_label} LL", _diff(summary, deq, deep, "test_log_likelihood"), 0.0,
                False)
            add(f"gaussian{dim}: {deep_label} Fisher − {label} Fisher",
                _diff(summary, deep, deq, "test_fisher_divergence"), 0.0, False)
    for deq_row, _, label, _ in DKEF_PAIRS[1:]:
        deq = f"table3/gaussian100/{deq_row}"
        add(f"gaussian100: {label} Fisher divergence vs the authors' code", _mean(summary, deq, "test_fisher_divergence"),
            AUTHORS_CODE_GAUSSIAN100["fisher"], True)
        add(f"gaussian100: {label} LL gap vs the authors' code", summary.get(deq, {}).get("ll_gap_to_truth"),
            AUTHORS_CODE_GAUSSIAN100["gap"], True)
    add("NICE: DEQ-SSM test LL − SSM test LL", _diff(summary, "table4/DEQ-SSM", "table4/SSM", "test_log_likelihood"),
        0.0, False)
    add("NICE: SSM test SM loss − DEQ-SSM test SM loss", _diff(summary, "table4/SSM", "table4/DEQ-SSM", "test_sm_loss"),
        0.0, False)
    memory = _diff(summary, "table4/SSM", "table4/DEQ-SSM", "train_peak_memory_mib")
    add("NICE: SSM peak MiB − DEQ-SSM peak MiB", memory, 0.0, False)
    return found


def _diff(summary: dict[str, Any], a: str, b: str, metric: str) -> float | None:
    x, y = _mean(summary, a, metric), _mean(summary, b, metric)
    return None if x is None or y is None else x - y


def build_report(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Our summaries next to the paper's numbers, with budgets and targets."""
    summary = {row: row_summary(found) for row, found in runs.items()}
    return {
        "analysis": REPORT_ANALYSIS,
        "rows": {row: {"ours": summary[row], "paper": PAPER.get(row, {}),
                       "seeds": [r["seed"] for r in runs[row]], "budget": runs[row][0]["budget"],
                       "device": runs[row][0]["device"], "device_type": runs[row][0].get("device_type", "cpu"),
                       "mean_wall_s": float(np.mean([r["wall_s"] for r in runs[row]]))}
                 for row in sorted(runs, key=lambda r: list(ROWS).index(r))},
        "targets": targets(summary),
        "paper_ground_truth": {row: values for row, values in PAPER.items() if row.endswith("Ground Truth")},
    }


def _cell(ours: dict[str, Any] | None, paper: Any) -> str:
    text = "—" if ours is None else format_value(ours["mean"])
    if ours is not None and ours["n"] > 1:
        text += f" ± {format_value(ours['std'])}"
    if isinstance(paper, list):
        paper = f"{paper[0]:g} ± {paper[1]:g}"
    return f"{text} ({paper})" if paper is not None else text


def markdown_lines(report: dict[str, Any]) -> list[str]:
    """Tables of our numbers with the paper's in parentheses, and the targets."""
    lines = ["| row | seeds | iters | test SM loss | test LL | LL gap to truth | Fisher div. | params "
             "| train peak MiB (paper GB) | ms / iter | log Z s.e. |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row, entry in report["rows"].items():
        ours, paper = entry["ours"], entry["paper"]
        se = ours.get("log_normaliser_std_error")
        gap = ours.get("ll_gap_to_truth")
        lines.append("| " + " | ".join([
            row, str(len(entry["seeds"])), str(entry["budget"]["n_iters"]),
            _cell(ours.get("test_sm_loss"), paper.get("test_sm_loss")),
            _cell(ours.get("test_log_likelihood"), paper.get("test_log_likelihood")),
            "—" if gap is None else format_value(gap),
            _cell(ours.get("test_fisher_divergence"), paper.get("test_fisher_divergence")),
            _cell(ours.get("params"), paper.get("params")),
            _cell(ours.get("train_peak_memory_mib"), paper.get("memory_gb")),
            _cell(ours.get("train_time_per_step_ms"), None),
            "—" if se is None else format_value(se["mean"]),
        ]) + " |")
        truth = ours.get("true_test_log_likelihood")
        if truth is not None and row.endswith("DEQ-SM DKEF"):
            table = row.rsplit("/", 1)[0]
            ground = PAPER.get(f"{table}/Ground Truth", {}).get("test_log_likelihood")
            lines.append(f"| {table}/Ground Truth | | | | {format_value(truth)} ({ground:g}) | 0 | 0 | | | | |")
    return [*lines, "", *goals_table(report["targets"])]


def intro(report: dict[str, Any]) -> str:
    """The paragraph above a report's tables: what the columns are, and how memory and time were taken
    on the devices its rows ran on."""
    on_gpu = any(entry.get("device_type") == "cuda" for entry in report["rows"].values())
    memory = ("the training process's peak CUDA memory (torch.cuda.max_memory_allocated)" if on_gpu
              else "our training process's peak (RSS on CPU)")
    timing = ("ms / iter is wall time with the group's runs sharing one GPU, so it compares rows only roughly"
              if on_gpu else "ms / iter is wall time on a shared 2-core CPU with two to five runs at once, so it "
              "compares rows only roughly")
    return ("Our mean ± std over seeds, the paper's number in parentheses. Memory: " + memory + " in MiB; the "
            "paper's GPU memory in GB. Budgets are ours and stated per row (the paper: 300 epochs on UCI, 200 on "
            "the Gaussians, 1000 NICE iterations); `python -m benchmarks.paper_tables` reruns them. " + timing
            + "; the `depth` suite times models side by side.")


def write_report(folder: Path = RUNS_DIR, stem: Path = REPORT_STEM) -> dict[str, Any]:
    """Builds the report from `folder` and writes <stem>.json and <stem>.md."""
    report = build_report(load_runs(folder))
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    header = ["# Paper tables 2–4: ours against the paper", "", intro(report), ""]
    stem.with_suffix(".md").write_text("\n".join(header + markdown_lines(report)) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and evaluate the missing (row, seed) pairs of a group")
    run.add_argument("--group", required=True, choices=sorted(GROUPS))
    run.add_argument("--jobs", type=int, default=1)
    run.add_argument("--n_iters", type=int, default=None, help="training steps (default: the group's)")
    run.add_argument("--seeds", default=None, help="comma-separated seeds (default: the group's)")
    run.add_argument("--runs_root", default=str(ROOT / "runs" / "paper-tables"))
    run.add_argument("--device", default="cpu", choices=DEVICES)
    run.add_argument("--out_dir", default=None, help="folder of the result files (default: the group's)")
    reeval = sub.add_parser("reeval", help="re-run only the evaluation of existing result files")
    reeval.add_argument("--rows", required=True, help="comma-separated prefixes of row names, e.g. table2/parkinsons")
    reeval.add_argument("--reason", required=True, help="why, recorded in each file")
    reeval.add_argument("--runs_root", default=str(ROOT / "runs" / "paper-tables"))
    seeds = sub.add_parser("seeds", help="print a seed study's baseline-against-DEQ tables")
    seeds.add_argument("--study", required=True, help="the study folder, e.g. benchmarks/results/vae-mnist-5000")
    report = sub.add_parser("report", help="write benchmarks/results/paper-tables.{json,md}")
    report.add_argument("--runs_dir", default=str(RUNS_DIR), help="folder of the result files")
    report.add_argument("--stem", default=str(REPORT_STEM), help="the report's path without .json / .md")
    args = parser.parse_args(argv)
    if args.command == "run":
        if args.jobs < 1:
            parser.error(f"--jobs must be >= 1, got {args.jobs}")
        seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
        run_group(args.group, args.jobs, args.n_iters, seeds, Path(args.runs_root), args.device,
                  Path(args.out_dir) if args.out_dir else None)
    elif args.command == "reeval":
        prefixes = tuple(args.rows.split(","))
        for path in sorted(RUNS_DIR.glob("*.json")):
            if json.loads(path.read_text()).get("row", "").startswith(prefixes):
                print("re-evaluated", reevaluate_one(path, Path(args.runs_root), args.reason).relative_to(ROOT), flush=True)
    elif args.command == "seeds":
        from benchmarks.seed_comparison import print_study  # it imports this module's summarise

        print_study(Path(args.study))
    else:
        write_report(Path(args.runs_dir), Path(args.stem))


if __name__ == "__main__":
    main(sys.argv[1:])
