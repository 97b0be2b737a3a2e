"""benchmarks.paper_tables: per-seed runs summarised against the paper, and the targets."""
import json
import math

import pytest

from benchmarks import paper_tables
from benchmarks.benchmarks_page import render_page as render_section
from configs.overrides import apply_overrides
from configs.paper_rows import ROWS, row_config


def _write_run(folder, row, seed, device_type="cpu", **evaluation):
    device = "Test CPU (cpu)" if device_type == "cpu" else "Test GPU"
    result = {"analysis": paper_tables.RUN_ANALYSIS, "row": row, "seed": seed, "budget": {"n_iters": 10},
              "device": device, "device_type": device_type, "wall_s": 1.5, "eval": evaluation}
    (folder / f"{paper_tables.slug(row)}-seed{seed}.json").write_text(json.dumps(result))


def test_every_group_row_and_paper_row_exists():
    for group in paper_tables.GROUPS.values():
        assert set(group.rows) <= set(ROWS)
    assert {row for row in paper_tables.PAPER if not row.endswith("Ground Truth")} <= set(ROWS)


def test_overrides_set_top_level_and_nested_fields_and_reject_unknown_ones():
    config = row_config("table4/DEQ-SSM")
    assert config.seed == 42 and config.model.name == "nice" and config.deq.layers  # the row's own values
    apply_overrides(config, {"seed": 0, "deq.tol": 1e-6, "eval.batch_size": 5})
    assert (config.seed, config.deq.tol, config.eval.batch_size) == (0, 1e-6, 5)
    with pytest.raises(KeyError, match="config has no field 'sed'; valid: .*'seed'"):
        apply_overrides(config, {"sed": 0})
    with pytest.raises(KeyError, match="config has no field 'dq'"):
        apply_overrides(config, {"dq.tol": 1e-6})
    with pytest.raises(KeyError, match="seed is a value, not a section"):
        apply_overrides(config, {"seed.x": 1})


def test_report_means_stds_and_targets(tmp_path):
    runs, stem = tmp_path / "runs", tmp_path / "paper-tables"
    runs.mkdir()
    deq, deep = "table2/redwine/DEQ-SM DKEF", "table2/redwine/16-Layer-SM DKEF"
    for seed, ll in enumerate([-12.0, -13.0, -14.5]):
        _write_run(runs, deq, seed, test_log_likelihood=ll, test_sm_loss=-40.0 + seed, params=9000)
    for seed, ll in enumerate([-13.0, -13.5, -14.0]):
        _write_run(runs, deep, seed, test_log_likelihood=ll, test_sm_loss=-30.0, params=50000)
    g_deq, g_deep = "table3/gaussian100/DEQ-SM DKEF", "table3/gaussian100/16-Layer-SM DKEF"
    _write_run(runs, g_deq, 0, test_log_likelihood=-139.0, test_fisher_divergence=7.0, true_test_log_likelihood=-137.5)
    _write_run(runs, g_deep, 0, test_log_likelihood=-141.0, test_fisher_divergence=6.5, true_test_log_likelihood=-137.5)
    _write_run(runs, "table4/SSM", 0, test_log_likelihood_logit_space=-2100.0, test_sm_loss=-2400.0,
               train_peak_memory_mib=900.0)

    report = paper_tables.write_report(runs, stem)

    ours = report["rows"][deq]["ours"]["test_log_likelihood"]
    assert ours["mean"] == pytest.approx(-39.5 / 3)
    # Sample std of (-12, -13, -14.5): deviations 1.1667, 0.1667, -1.3333.
    assert ours["std"] == pytest.approx(math.sqrt((1.1667**2 + 0.1667**2 + 1.3333**2) / 2), rel=1e-3)
    assert report["rows"][deq]["paper"]["test_log_likelihood"] == [-12.2, 0.7]
    assert report["rows"]["table4/SSM"]["ours"]["test_log_likelihood"]["mean"] == -2100.0  # logit space
    assert list(report["rows"]) == [r for r in ROWS if r in report["rows"]]  # the paper's row order

    targets = {t["what"]: t for t in report["targets"]}
    redwine = targets["redwine: DEQ-SM test LL − 16-layer test LL"]
    assert redwine["value"] == pytest.approx(-39.5 / 3 + 13.5) and redwine["met"]  # -13.17 > -13.5
    gap = targets["gaussian100: DEQ-SM LL gap to the true density"]
    assert gap["value"] == pytest.approx(1.5) and gap["met"]  # <= the paper's 1.72
    assert not targets["gaussian100: DEQ-SM Fisher divergence"]["met"]  # 7.0 > 6.72
    assert targets["gaussian100: DEQ-SM LL − 16-layer LL"]["met"]
    assert not targets["gaussian100: 16-layer Fisher − DEQ-SM Fisher"]["met"]
    assert not any(goal.startswith("NICE") for goal in targets)  # DEQ-SSM missing: undecided, not listed

    text = stem.with_suffix(".md").read_text()
    assert "| table2/redwine/DEQ-SM DKEF | 3 | 10 | -39 ± 1 (-44.5 ± 4.1) |" in text
    assert "| table3/gaussian100/Ground Truth | | | | -138 (-137.14) |" in text
    assert json.loads(stem.with_suffix(".json").read_text()) == report


def test_report_is_rendered_on_the_benchmarks_page(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    _write_run(runs, "table4/DEQ-SSM", 0, test_log_likelihood_logit_space=-1800.0, test_sm_loss=-2500.0)
    paper_tables.write_report(runs, tmp_path / "paper-tables")
    section = render_section(tmp_path)
    assert "### Paper tables 2–4, ours against the paper (Test CPU (cpu))" in section
    assert "Memory: our training process's peak (RSS on CPU)" in section
    assert "| table4/DEQ-SSM | 1 | 10 | -2500 (-2548 ± 55) | -1800 (-1766 ± 48) |" in section
    assert "paper-row-run" not in section  # per-seed files are not rendered one by one


def test_a_gpu_report_says_how_its_memory_was_taken(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    _write_run(runs, "table4/DEQ-SSM", 0, "cuda", test_sm_loss=-2500.0, train_peak_memory_mib=700.0)
    paper_tables.write_report(runs, tmp_path / "table4-gpu")
    section = render_section(tmp_path)
    assert "### Paper tables 2–4, ours against the paper: `table4-gpu` (Test GPU)" in section
    assert "peak CUDA memory (torch.cuda.max_memory_allocated)" in section and "RSS" not in section


def test_a_run_trains_on_the_device_asked_for_and_records_where_it_resumed(tmp_path, monkeypatch):
    """--device reaches main.py as --config.device; a workdir that already holds a checkpoint is trained on
    from its step, and the result goes to --out_dir."""
    from score_matching.checkpoint import save_checkpoint

    runs_root, out_dir = tmp_path / "runs", tmp_path / "out"
    row, ran = "table4/SSM", []
    workdir = runs_root / f"{paper_tables.slug(row)}-seed0"
    save_checkpoint(workdir / "checkpoint-meta.pth", {"step": 1000})

    def fake_run(commands, where):
        ran.extend(commands)
        where.mkdir(parents=True, exist_ok=True)
        (where / "eval.json").write_text(json.dumps({"test_sm_loss": -1.0}))

    monkeypatch.setattr(paper_tables, "_run_logged", fake_run)
    paper_tables.run_group("nice", jobs=1, n_iters=3000, seeds=(0,), runs_root=runs_root, device="cpu",
                           out_dir=out_dir)
    result = json.loads((out_dir / f"{paper_tables.slug(row)}-seed0.json").read_text())
    assert "--config.device=cpu" in ran[0] and "--config.training.n_iters=3000" in ran[0]
    assert result["resumed_from_step"] == 1000 and result["device_type"] == "cpu"
    assert json.loads((out_dir / f"{paper_tables.slug('table4/DEQ-SSM')}-seed0.json").read_text())["resumed_from_step"] == 0
    with pytest.raises(SystemExit):
        paper_tables.main(["run", "--group=nice", "--device=tpu"])


def test_reevaluation_runs_only_the_eval_and_keeps_the_previous_one(tmp_path, monkeypatch):
    row = "table2/redwine/DEQ-SM DKEF"
    _write_run(tmp_path, row, 1, test_log_likelihood=-12.0, log_normaliser_std_error=0.3)
    path = tmp_path / f"{paper_tables.slug(row)}-seed1.json"
    runs_root = tmp_path / "runs"
    workdir = runs_root / f"{paper_tables.slug(row)}-seed1"
    workdir.mkdir(parents=True)
    (workdir / "checkpoint-meta.pth").write_bytes(b"")
    ran = []

    def fake_run(commands, where):
        ran.extend(commands)
        (where / "eval.json").write_text(json.dumps({"test_log_likelihood": -12.5, "log_normaliser_std_error": 0.05}))

    monkeypatch.setattr(paper_tables, "_run_logged", fake_run)
    paper_tables.reevaluate_one(path, runs_root, "new proposal")
    result = json.loads(path.read_text())
    assert len(ran) == 1 and ran[0].endswith("--mode=eval") and "--config.seed=1" in ran[0]
    assert "--config.training.n_iters=10" in ran[0] and "--config.eval.checkpoint=10" in ran[0] and str(workdir) in ran[0]
    assert result["eval"]["log_normaliser_std_error"] == 0.05
    assert result["previous_eval"] == {"test_log_likelihood": -12.0, "log_normaliser_std_error": 0.3}
    assert result["reevaluated"]["reason"] == "new proposal" and "runs/paper-tables" in result["reevaluated"]["command"]
    (workdir / "checkpoint-meta.pth").unlink()
    with pytest.raises(FileNotFoundError, match="no checkpoint to re-evaluate"):
        paper_tables.reevaluate_one(path, runs_root, "again")


def test_gradient_mode_eval_of_a_checkpoint(tmp_path, monkeypatch, uci_root):
    """The phantom metrics are the run's own eval; the unrolled ones are those of the exact fixed point,
    which phantom steps converge to as K grows (the paper's proposition 2)."""
    from benchmarks import gradient_mode_eval
    from main import model_transform_for
    from score_matching import run
    from tiny_runs import tiny_config, train_losses

    config = tiny_config("dkef_deq")
    train_losses(config, tmp_path)
    step = config.training.n_iters
    saved = run.evaluate(config, str(tmp_path), model_transform_for(config), lambda m: {})
    monkeypatch.setattr(gradient_mode_eval, "row_config", lambda row: tiny_config("dkef_deq"))
    modes = gradient_mode_eval.evaluate_modes("tiny", str(tmp_path), step, exact_tol=1e-7)
    assert modes["phantom"]["test_sm_loss"] == pytest.approx(saved["test_sm_loss"], rel=1e-6)
    monkeypatch.setattr(gradient_mode_eval, "row_config", lambda row: tiny_config("dkef_deq", deq__phantom_steps=60))
    many_steps = gradient_mode_eval.evaluate_modes("tiny", str(tmp_path), step, exact_tol=1e-7)["phantom"]
    assert modes["unrolled"]["test_sm_loss"] == pytest.approx(many_steps["test_sm_loss"], rel=1e-4)
    monkeypatch.setattr(gradient_mode_eval, "row_config", lambda row: tiny_config("dkef_deq"))
    overridden = gradient_mode_eval.evaluate_modes("tiny", str(tmp_path), step, 1e-7, overrides={"deq.phantom_steps": 60})
    assert overridden["phantom"]["test_sm_loss"] == pytest.approx(many_steps["test_sm_loss"], rel=1e-9)
    with pytest.raises(KeyError, match="'deq.phantom_step': deq has no field 'phantom_step'"):
        gradient_mode_eval.evaluate_modes("tiny", str(tmp_path), step, 1e-7, overrides={"deq.phantom_step": 60})
    with pytest.raises(FileNotFoundError):
        gradient_mode_eval.evaluate_modes("tiny", str(tmp_path), step + 1, exact_tol=1e-7)


def test_every_committed_paper_row_result_ran_at_its_groups_budget():
    """configs/paper_rows.GROUPS is the one definition of the committed runs' budgets and overrides."""
    from configs.paper_rows import GROUPS

    checked = 0
    for path in sorted(paper_tables.RESULTS.rglob("*.json")):
        result = json.loads(path.read_text())
        if not isinstance(result, dict) or result.get("analysis") != paper_tables.RUN_ANALYSIS:
            continue
        folder = path.parent.relative_to(paper_tables.RESULTS).as_posix()
        groups = [g for g in GROUPS.values() if g.folder == folder and result["row"] in g.rows]
        assert len(groups) == 1, f"{path.name}: no single group of {folder!r} holds row {result['row']!r}"
        group = groups[0]
        assert result["budget"] == {"n_iters": group.n_iters, **dict(group.overrides)}, path
        evaluation = result.get("reevaluated", {}).get("command") or result["commands"][0]
        for key, value in group.overrides:
            assert f"--config.{key}={value}" in evaluation, (path, key)
        checked += 1
    # tables 2-4 at the short budget, the standard Gaussians, the longer d = 100 runs (48); the linear DEQ DKEF
    # on tables 2 and 3 (11), the DKEF ablation (8), the authors' recipe where it ran (4)
    assert checked == 48 + 11 + 8 + 4


def _seed_run(folder, seed, model, elbo, ssm, exact=None, deq=False):
    folder = folder / f"seed{seed}" / model
    folder.mkdir(parents=True)
    run = {"test_elbo": elbo, "test_ssm_vr_loss": ssm, "test_recon_nll": 70.0, "mnist_classifier_fd": 9.0,
           "train_time_per_step_ms": 1.0, "train_peak_memory_mib": 2.0, **({"deq/augment/iterations": 5} if deq else {})}
    (folder / "eval.json").write_text(json.dumps(run))
    (folder / "eval-seed1.json").write_text(json.dumps({**run, "test_elbo": elbo - 2.0, "test_ssm_vr_loss": ssm + 4.0}))
    if exact is not None:
        (folder / "exact-derivatives-eval.json").write_text(json.dumps({"test_ssm_vr_loss": exact}))


def test_seed_study_tables_average_evaluation_seeds_and_fall_back_to_the_studys_baselines(tmp_path, capsys):
    _seed_run(tmp_path, 1, "baseline", -100.0, -10.0)
    _seed_run(tmp_path, 1, "deq", -103.0, -20.0, exact=-5.0, deq=True)
    _seed_run(tmp_path / "k5", 1, "deq", -99.0, -12.0, exact=-11.0, deq=True)  # no baseline of its own
    paper_tables.main(["seeds", f"--study={tmp_path}"])
    printed = capsys.readouterr().out
    top, k5 = printed.split("### `k5`")
    # means over evaluation seeds: baseline ELBO (-100 - 102) / 2 = -101, SSM (-10 - 6) / 2 = -8;
    # exact SSM: the baseline's own eval.json (-10), the DEQ's re-scored file (-5)
    assert "| 1 | baseline | `seed1/baseline` | 2 | -8.00 | -101.00 | -10.00 |" in top
    assert "| 1 | deq | `seed1/deq` | 2 | -18.00 | -104.00 | -5.00 |" in top
    # DEQ lead: SSM -8 - (-18) = +10 (lower is better), exact -10 - (-5) = -5, ELBO -104 - (-101) = -3
    assert "| 1 | +10.00 | -5.00 | -3.00 |" in top
    assert "| 1 | baseline | `seed1/baseline` |" in k5 and "| 1 | deq | `k5/seed1/deq` | 2 | -10.00 | -100.00 | -11.00 |" in k5
