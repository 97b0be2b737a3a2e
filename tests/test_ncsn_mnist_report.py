"""The equal-budget NCSN comparison's report, on the committed quick-start result files as stand-ins."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import ncsn_mnist_report
from configs.ncsn_twores import get_config as twores_config
from score_matching.tasks.ncsn import build_ncsn_model

QUICKSTART = Path(__file__).resolve().parents[1] / "docs" / "results" / "quickstart"


def _variant(root: Path, name: str, fd: float, model: str, deq_layers: str) -> None:
    folder = root / name
    folder.mkdir()
    for file in ("metrics.jsonl", "samples_step_4500.png"):
        shutil.copy(QUICKSTART / file, folder / file)
    evaluation = json.loads((QUICKSTART / "eval.json").read_text())
    evaluation["mnist_classifier_fd"] = fd
    (folder / "eval.json").write_text(json.dumps(evaluation))
    config = json.loads((QUICKSTART / "config.json").read_text())
    config["model"]["name"], config["deq"]["layers"] = model, deq_layers
    config["training"]["batch_size"] = 4
    (folder / "config.json").write_text(json.dumps(config))


def test_report_compares_the_best_deq_with_the_refinenet(tmp_path: Path) -> None:
    _variant(tmp_path, "refinenet", 100.0, "ncsn_refinenet", "")
    _variant(tmp_path, "deq-implicit", 90.0, "ncsn_twores", "deq_res")
    _variant(tmp_path, "deq-K2", 120.0, "ncsn_twores", "deq_res")
    report = ncsn_mnist_report.write_report(tmp_path)
    rows = report["variants"]
    assert list(rows) == ["refinenet", "deq-implicit", "deq-K2"]
    quickstart = json.loads((QUICKSTART / "eval.json").read_text())
    assert rows["deq-K2"]["confident_share"] == quickstart["classifier_confident_share"]
    assert rows["deq-implicit"]["deq_train_iterations"] == pytest.approx(quickstart["train_deq/deq_res/iterations"])
    fd_goal, memory_goal = report["targets"]
    assert fd_goal["what"].startswith("deq-implicit / refinenet") and fd_goal["value"] == pytest.approx(0.9)
    assert memory_goal["value"] == pytest.approx(rows["deq-implicit"]["total_peak_mib"] / rows["refinenet"]["total_peak_mib"])
    # resident = parameters, gradients and Adam's two moments (4 × float32 parameters) plus the batch
    config = twores_config()
    config.model.name = "ncsn_refinenet"
    params = sum(p.numel() for p in build_ncsn_model(config, 1).parameters())
    resident = (16 * params + 4 * 28 * 28 * 4) / 2**20
    assert rows["refinenet"]["total_peak_mib"] - rows["refinenet"]["step_peak_mib"] == pytest.approx(resident, rel=1e-6)
    assert rows["deq-implicit"]["step_peak_mib"] < rows["refinenet"]["step_peak_mib"]
    assert (tmp_path / "comparison.png").stat().st_size > 0
    assert "| deq-K2 | 120 |" in (tmp_path / "comparison.md").read_text()


def test_report_without_results_names_the_variants(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="refinenet"):
        ncsn_mnist_report.write_report(tmp_path)
