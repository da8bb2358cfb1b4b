"""The dashboards the README promises, served for a finished run: optuna-dashboard on the run's optuna.db."""

import json
import sys
import urllib.request
from pathlib import Path

from conftest import free_port, serving


def _finished_study(path: Path) -> str:
    """An Optuna study as a finished search leaves it (tuning.py): maximised, one COMPLETE trial with its
    per-epoch devel rho as intermediate values, one PRUNED after its first epoch."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="demo", direction="maximize",
                                storage=optuna.storages.RDBStorage(f"sqlite:///{path}"))
    for epochs, state in ((3, optuna.trial.TrialState.COMPLETE), (1, optuna.trial.TrialState.PRUNED)):
        trial = study.ask()
        trial.suggest_float("training.learning_rate", 1e-4, 1e-2, log=True)
        trial.suggest_categorical("model.cell", ["gru", "lstm"])
        for epoch in range(1, epochs + 1):
            trial.report(0.1 * epoch, epoch)
        study.tell(trial, 0.3 if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    return f"sqlite:///{path}"


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


def test_optuna_dashboard_serves_a_finished_runs_study(tmp_path):
    storage = _finished_study(tmp_path / "optuna.db")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # the command the README gives, from the same environment as this Python
    command = [str(Path(sys.executable).parent / "optuna-dashboard"), "--host", "127.0.0.1", "--port", str(port),
               storage]
    with serving(command, f"{base}/api/meta", log=tmp_path / "dashboard.log"):
        studies = _get(f"{base}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == ["demo"]
        trials = _get(f"{base}/api/studies/{studies[0]['study_id']}")["trials"]
        assert [t["state"] for t in trials] == ["Complete", "Pruned"]
        assert [[v["step"] for v in t["intermediate_values"]] for t in trials] == [[1, 2, 3], [1]]
        assert trials[0]["values"] == [0.3]
        assert {p["name"] for p in trials[0]["params"]} == {"training.learning_rate", "model.cell"}
        with urllib.request.urlopen(f"{base}/dashboard", timeout=10) as page:  # the page a browser opens
            assert page.status == 200 and b"<html" in page.read().lower()


def test_optuna_dashboard_serves_the_study_of_a_real_search(finished, tmp_path):
    """The README's line on a real finished search: every trial of its optuna.db, with the state and the
    per-epoch devel rho (intermediate values) Optuna itself reads there."""
    import optuna

    run_dir, _ = finished
    storage = f"sqlite:///{run_dir / 'optuna.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    (summary,) = optuna.get_all_study_summaries(storage)
    expected = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=False)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).parent / "optuna-dashboard"), "--host", "127.0.0.1", "--port", str(port),
               storage]
    with serving(command, f"{base}/api/meta", log=tmp_path / "dashboard.log"):
        (study,) = _get(f"{base}/api/studies")["study_summaries"]
        trials = _get(f"{base}/api/studies/{study['study_id']}")["trials"]
    assert [t["state"].upper() for t in trials] == [t.state.name for t in expected]
    assert [{v["step"]: v["value"] for v in t["intermediate_values"]} for t in trials] == \
        [t.intermediate_values for t in expected]
    assert any(t.intermediate_values for t in expected)  # the search reported its epochs
