"""The Ray session of a search: the environment Ray and Tune read at import, token authentication, and
connecting to a cluster or starting Ray here."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from auttention import TF_LOG_LEVEL
from auttention.errors import UserError

from .compat import RAY_AUTH_SETUP_LOGGER, reload_ray_config

QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": TF_LOG_LEVEL, "PYTHONWARNINGS": "ignore::DeprecationWarning"}
TUNE_ENV = {
    # Tune warns when syncing the experiment state takes seconds; trial checkpoints make that normal here
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "60",
    # Tune's boxed tables: our ProgressLog prints one line per scored epoch instead
    "RAY_AIR_NEW_OUTPUT": "0",
}


RAY_AUTH_ENABLED_NOTICE = "Token authentication is enabled for this Ray cluster"


class _DropAuthEnabledNotice(logging.Filter):
    """Drop Ray's notice that token authentication is on, which ends by advising to turn it off."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(RAY_AUTH_ENABLED_NOTICE)


def quiet_auth_enabled_notice() -> None:
    """Silence Ray's "token authentication is enabled ... set RAY_AUTH_MODE=disabled to opt out" warning:
    we keep token authentication on on purpose (start_ray), so the opt-out is advice we never want shown;
    Ray's warning that authentication is *disabled* still gets through."""
    logger = logging.getLogger(RAY_AUTH_SETUP_LOGGER)
    if not any(isinstance(f, _DropAuthEnabledNotice) for f in logger.filters):
        logger.addFilter(_DropAuthEnabledNotice())


def use_token_auth() -> bool:
    """Send the Ray token to clusters when one is at hand ($RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or
    ~/.ray/auth_token, which `ray start` and a local ray.init() create): Ray's own clients only do
    when RAY_AUTH_MODE=token is set, so a user on the cluster's machine would have to copy it by hand."""
    if os.environ.get("RAY_AUTH_MODE"):
        return os.environ["RAY_AUTH_MODE"].lower() == "token"
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if not (os.environ.get("RAY_AUTH_TOKEN") or path.is_file()):
        return False
    os.environ["RAY_AUTH_MODE"] = "token"
    reload_ray_config()  # where Ray is imported already: it read its settings then
    return True


def start_ray(
    address: str | None, dashboard: bool, verbose: bool = False, num_cpus: int | None = None
) -> tuple[str | None, bool]:
    """Connect to a cluster or start Ray here (token authentication on, dashboard on 127.0.0.1; with
    `num_cpus` CPUs, default all).

    The cluster is `address` (the CLI reads $RAY_ADDRESS, which a Ray job sets, into it); without one Ray starts
    here, never joining a cluster that happens to run on this machine (`--address auto` does that).
    Returns (dashboard URL, whether Ray was started here and must be shut down).
    """
    for key, value in TUNE_ENV.items():  # read by Ray Tune, which the search imports after this
        os.environ.setdefault(key, value)
    import ray  # here, not at the top: Ray takes seconds to import, and jobs.py imports this module

    # Ray 2.60 turns token authentication on for a local ray.init() (creating ~/.ray/auth_token) and
    # uses the token when connecting to a cluster; we only refuse to run with it switched off silently.
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        logging.getLogger(__name__).warning(
            "RAY_AUTH_MODE=disabled: anyone who can reach this Ray cluster "
            "can run code on it; unset it to keep token authentication on"
        )
    target = address or None
    if target:
        use_token_auth()
    quiet_auth_enabled_notice()
    # a submitted job's driver inherits the job's runtime env (which `submit` gives these variables)
    runtime_env = None if os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") else {"env_vars": dict(QUIET_ENV)}
    try:
        if target:
            context = ray.init(
                address=target, runtime_env=runtime_env, logging_level=logging.WARNING, log_to_driver=verbose
            )
        else:
            context = ray.init(
                address="local",
                include_dashboard=dashboard,
                dashboard_host="127.0.0.1",
                runtime_env=runtime_env,
                logging_level=logging.WARNING,
                log_to_driver=verbose,
                num_cpus=num_cpus,
            )
    except ConnectionError as exc:
        raise UserError(
            f"--address {target}: cannot connect to a Ray cluster ({str(exc).splitlines()[0]}); "
            f"is it running (`ray status`), and is its token in ~/.ray/auth_token or "
            f"$RAY_AUTH_TOKEN?"
        ) from None
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    return getattr(context, "dashboard_url", None) or None, not target
