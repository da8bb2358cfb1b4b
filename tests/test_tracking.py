"""Experiment tracking: `run --mlflow URI` logs trials and the exported best to a real MLflow server."""

import subprocess
import sys
from pathlib import Path

import yaml
from conftest import TINY_SPACE, free_port, serving


def test_run_logs_trials_and_best_to_mlflow(tiny, tmp_path):
    from mlflow.tracking import MlflowClient

    root, corpus, _ = tiny
    space = tmp_path / "tracked.yaml"  # two trials of two epochs, no confirmation seeds: the tracking is tested
    space.write_text(yaml.safe_dump({**TINY_SPACE, "scheduler": {"type": "none", "max_epochs": 2},
                                     "experiment": {**TINY_SPACE["experiment"], "name": "tracked",
                                                    "num_samples": 2, "confirm_top": 0}}))
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
              "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
              "--artifacts-destination", str(tmp_path / "artifacts")]
    # no background job runner (it needs huey, which mlflow-skinny leaves out; tracking needs no jobs)
    quiet = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with serving(server, f"{uri}/health", log=tmp_path / "mlflow.log", env=quiet):
        out = subprocess.run([sys.executable, "-m", "search.cli", "run", str(space), "--data", str(corpus),
                              "--runs", str(tmp_path / "runs"), "--cache", str(root / "cache"), "--no-dashboard",
                              "--mlflow", uri], capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "mlflow: the trials and the exported best (run 'best') in experiment 'tracked'" in out.stdout
        assert "View run" not in out.stdout  # mlflow's own lines, one per run, are left out

        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name("tracked")
        runs = client.search_runs([experiment.experiment_id])
        best = [r for r in runs if r.info.run_name == "best"]
        trials = [r for r in runs if r.info.run_name != "best"]
        assert len(best) == 1 and len(trials) == 2
        for trial in trials:
            assert "training/learning_rate" in trial.data.params or "training.learning_rate" in trial.data.params
            epochs = client.get_metric_history(trial.info.run_id, "fusion_score")
            assert [m.step for m in sorted(epochs, key=lambda m: m.step)] == list(range(1, len(epochs) + 1))
            assert len(epochs) >= 1 and all(-1 <= m.value <= 1 for m in epochs)
        exported = best[0].data
        assert {"fusion.devel_rho", "fusion.c", "epoch"} <= set(exported.metrics)
        files = {f.path for f in client.list_artifacts(best[0].info.run_id)}
        assert {"metrics.json", "config.yaml", "predictions.test.csv"} <= files


def test_mlflow_missing_is_one_line_naming_the_install(tmp_path):
    # an interpreter where `import mlflow` fails, as where the [mlflow] extra is not installed
    code = "import sys; sys.modules['mlflow'] = None; from search.cli import main; main()"
    space = tmp_path / "s.yaml"
    space.write_text(yaml.safe_dump(TINY_SPACE))
    out = subprocess.run([sys.executable, "-c", code, "run", str(space), "--mlflow", "http://127.0.0.1:1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--mlflow http://127.0.0.1:1" in lines[0] and "[mlflow]" in lines[0], out.stderr
