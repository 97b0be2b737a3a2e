"""benchmarks/gpu_training.sh's orchestration, run with a stand-in `python` that records its calls.

The script is run for real only on a GPU machine, where a mistake in its shell logic would cost a
training session. Here every `python` it starts is a stub that logs its arguments and writes the
files a real run would (checkpoint, eval.json, sample grid), and the test checks the commands and
the result folders.
"""
import os
import pathlib
import shutil
import stat
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_PYTHON_CALLS"
workdir=
for arg in "$@"; do
  case $arg in --workdir=*) workdir=${arg#--workdir=};; esac
done
[[ -n $workdir ]] || exit 0
mkdir -p "$workdir/checkpoints" "$workdir/samples"
case " $* " in
  *" --mode=eval "*) echo '{}' > "$workdir/eval.json" ;;
  *" --mode=sample "*) touch "$workdir/samples/sample_step_500.png" ;;
  *) touch "$workdir/checkpoints/checkpoint_500.pth" "$workdir/metrics.jsonl" "$workdir/samples/step_5000.png" ;;
esac
"""


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                    reason="needs bash and coreutils timeout")
def test_gpu_training_script_runs_all_three_parts(tmp_path):
    root = tmp_path / "repo"
    (root / "benchmarks").mkdir(parents=True)
    shutil.copy(REPO / "benchmarks" / "gpu_training.sh", root / "benchmarks" / "gpu_training.sh")
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir()
    stub = stub_dir / "python"
    stub.write_text(FAKE_PYTHON)
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.txt"
    out = tmp_path / "out"
    env = {key: value for key, value in os.environ.items() if key not in ("VAE_SEEDS", "NICE_STEPS", "NCSN_STEPS")}
    env.update(PATH=f"{stub_dir}:{env['PATH']}", FAKE_PYTHON_CALLS=str(calls), DEVICE="cpu")

    done = subprocess.run(["bash", str(root / "benchmarks" / "gpu_training.sh"), str(out), str(tmp_path / "runs")],
                          env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stdout + done.stderr
    lines = calls.read_text().splitlines()
    nice = [line for line in lines if "benchmarks.paper_tables run" in line]
    assert len(nice) == 2
    assert all(flag in nice[0] for flag in ("--device=cpu", "--n_iters=1000", "--seeds=0,1,2"))
    assert "--n_iters=3000" in nice[1] and "--seeds=0" in nice[1]
    assert sum("benchmarks.paper_tables report" in line for line in lines) == 2
    for model in ("baseline", "twores", "deq"):
        ncsn = [line for line in lines if f"configs/ncsn_{model}.py" in line]
        assert [("--mode=eval" in line, "--mode=sample" in line) for line in ncsn] == [
            (False, False), (True, False), (False, True)]
        assert all("--config.device=cpu" in line and "--config.model.ngf=32" in line
                   and "--config.training.n_iters=5000" in line for line in ncsn)
        assert sorted(p.name for p in (out / "ncsn-mnist-cpu" / model).iterdir()) == [
            "commands.txt", "eval.json", "metrics.jsonl", "sample_step_500.png"]
    for seed in (45, 46):
        for model in ("baseline", "deq", "deq-K5"):
            vae = [line for line in lines if f"--workdir={tmp_path}/runs/vae/seed{seed}/{model} " in line]
            config = "vae_baseline.py" if model == "baseline" else "vae_deq.py"
            assert all(f"configs/{config}" in line and f"--config.seed={seed}" in line for line in vae)
            assert all(("--config.deq.phantom_steps=5" in line) == (model == "deq-K5") for line in vae)
            assert "--config.training.n_iters=5000" in vae[0] and "--mode=eval" not in vae[0]
            assert "--mode=eval" in vae[1] and "--config.deq.grad=unrolled" not in vae[1]
            files = ["commands.txt", "eval.json", "metrics.jsonl", "step_5000.png"]
            if model == "baseline":
                assert len(vae) == 2
            else:
                assert len(vae) == 3 and "--config.deq.grad=unrolled --config.deq.tol=1e-6" in vae[2]
                files.append("exact-derivatives-eval.json")
            folder = out / f"vae-mnist-5000-cpu/seed{seed}/{model}"
            assert sorted(p.name for p in folder.iterdir()) == sorted(files)
    assert (out / "gpu-training.log").is_file()
    assert not (root / "benchmarks" / "results").exists()  # nothing is written outside OUTPUT_DIR


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_training_script_needs_an_output_folder():
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_training.sh")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "usage:" in done.stdout
