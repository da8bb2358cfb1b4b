"""Ray session: Ray's own token-authentication notices, as Ray logs them."""

import logging

from search.raysession import RAY_AUTH_SETUP_LOGGER, quiet_auth_enabled_notice


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_auth_enabled_opt_out_advice_is_silenced_and_disabled_warning_kept():
    from ray._private.authentication import authentication_token_setup as setup

    assert setup.logger.name == RAY_AUTH_SETUP_LOGGER  # the logger our filter names is Ray's
    collect = _Collect()
    setup.logger.addHandler(collect)
    try:
        quiet_auth_enabled_notice()
        quiet_auth_enabled_notice()  # idempotent: one filter
        setup._warn_token_auth_enabled()
        setup._warn_token_auth_disabled()
    finally:
        setup.logger.removeHandler(collect)
    assert not any("opt out" in m for m in collect.messages)
    assert any("Token authentication is disabled" in m for m in collect.messages)
    assert sum(type(f).__name__ == "_DropAuthEnabledNotice" for f in setup.logger.filters) == 1
