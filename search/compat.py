"""Every use of Ray's and Optuna's private internals, in one place, with the versions it was checked against.

Checked against ray 2.60.0 and optuna 5.0.0 (constraints.txt). A version outside TESTED stops the search
before it starts (`check_versions`), in one line naming it and what to install: the internals below may
have moved there, and a search that fails hours in, or records a wrong study, costs more than a reinstall.
When you move a pin in constraints.txt: check each function here against the new version, then widen TESTED.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

from auttention.errors import UserError

# package: (lowest tested version, first version not tested), compared on (major, minor, patch)
TESTED: dict[str, tuple[str, str]] = {"ray": ("2.60.0", "2.61.0"), "optuna": ("5.0.0", "5.1.0")}

# loggers of private Ray modules whose lines we silence or word ourselves (ray 2.60.0):
RAY_DATA_PROGRESS_LOGGER = "ray.data._internal.progress"  # Ray Data's "progress bars are disabled" line
RAY_AUTH_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"  # token authentication's notice
# Dataset._execute's logger, and the start of its warning that the cluster has no CPU available (a false alarm
# after a short extraction: search/extract.py, _not_stale_cpu_warning)
RAY_DATA_DATASET_LOGGER = "ray.data.dataset"
RAY_DATA_NO_CPU_WARNING = "Warning: The Ray cluster currently does not have any available CPUs"


def _release(version: str) -> tuple[int, ...]:
    """'2.60.0rc1' -> (2, 60, 0): the numeric release, padded to three parts."""
    parts = []
    for piece in version.split(".")[:3]:
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
    return tuple(parts + [0] * (3 - len(parts)))


def unsupported(versions: dict[str, str | None]) -> str | None:
    """The one line refusing the first untested version among {package: installed version or None}, or None."""
    for package, installed in versions.items():
        low, high = TESTED[package]
        if installed is None:
            return f"{package} is not installed; install it with `pip install '{package}>={low},<{high}'`"
        if not _release(low) <= _release(installed) < _release(high):
            return (
                f"{package} {installed} is installed, but the search uses {package} internals checked only "
                f"with {package}>={low},<{high}: `pip install '{package}>={low},<{high}'` "
                f"(constraints.txt pins a tested set)"
            )
    return None


def installed_versions() -> dict[str, str | None]:
    """{package: installed version or None} of the packages in TESTED, read without importing them."""
    out: dict[str, str | None] = {}
    for package in TESTED:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def check_versions() -> None:
    """Stop (UserError) when the installed Ray or Optuna is outside the versions this module was checked with."""
    line = unsupported(installed_versions())
    if line:
        raise UserError(line)


# --- Ray Tune's OptunaSearch (ray/tune/search/optuna/optuna_search.py, ray 2.60.0) ---


def searcher_trials(searcher: Any) -> dict[str, Any]:
    """OptunaSearch's {Tune trial id: optuna.Trial} of the trials it asked for and has not forgotten."""
    return searcher._ot_trials


def searcher_study(searcher: Any) -> Any:
    """OptunaSearch's optuna.Study."""
    return searcher._ot_study


def searcher_completed(searcher: Any) -> set[str]:
    """OptunaSearch's set of Tune trial ids it has told the study about (it never tells one twice)."""
    return searcher._completed_trials


# --- Optuna (optuna 5.0.0) ---


def storage_trial_id(trial: Any) -> int:
    """The storage's id of an optuna.Trial or FrozenTrial (not its number, which is per study)."""
    return trial._trial_id


def set_user_attr(study: Any, trial: Any, key: str, value: Any) -> None:
    """Set a user attribute of any trial of `study`, also one not at hand as an optuna.Trial (a FrozenTrial)."""
    study._storage.set_trial_user_attr(storage_trial_id(trial), key, value)


# --- Ray Tune's MLflowLoggerCallback (ray/air/integrations/mlflow.py, ray 2.60.0) ---


def mlflow_trial_run(callback: Any, trial: Any) -> str:
    """The id of the MLflow run MLflowLoggerCallback started for a Tune trial (its private {trial: run id})."""
    return callback._trial_runs[trial]


# --- Ray Tune's Tuner (ray/tune/tuner.py, impl/tuner_internal.py, ray 2.60.0) ---


def restored_run_config(tuner: Any) -> Any:
    """The RunConfig a Tuner.restore'd tuner will run with (TunerInternal._run_config, unpickled from tuner.pkl;
    its `stop` is what tune.run's controller checks, so a new stopper set here takes effect)."""
    return tuner._local_tuner._run_config


# --- Ray (ray 2.60.0) ---


def wrap_function(trainable: Callable) -> type:
    """Tune's class for a function trainable (what tune.Tuner makes of it), to subclass."""
    from ray.tune.trainable.function_trainable import wrap_function as wrap

    return wrap(trainable)


def reload_ray_config() -> None:
    """Make an imported Ray read its settings from the environment again (it reads them at import); nothing
    where Ray's core is not imported yet (it will read them then)."""

    if "ray._raylet" not in sys.modules:
        return
    sys.modules["ray._raylet"].Config.initialize("")
