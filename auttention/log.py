"""One log path for every command: stdlib logging, with one handler policy.

Every module logs to `logging.getLogger(__name__)` (under `auttention.` or `search.`); its lines are worded
whole (a warning carries its own "warning: " prefix). `setup` routes them: progress and results (INFO) to
stdout, warnings and errors to stderr, the same for every command, a Ray trial's worker and a Ray job.
Called as a library without `setup`, warnings still reach stderr (Python's last-resort handler) and
progress lines stay quiet.
"""

from __future__ import annotations

import logging
import sys

ROOTS = ("auttention", "search")  # the loggers of this project's two packages


class _Stream(logging.StreamHandler):
    """A handler writing to sys.stdout or sys.stderr as they are when the line is written (pytest and
    click swap them), for the records `keep` accepts."""

    def __init__(self, name: str, stdout: bool) -> None:
        super().__init__()
        self._name, self._stdout = name, stdout
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return getattr(sys, self._name)

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns one: the property decides
        pass

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.levelno < logging.WARNING) == self._stdout and super().filter(record)


def setup(verbose: bool = False) -> None:
    """Route this project's log lines: INFO (DEBUG with `verbose`) to stdout, WARNING and above to stderr.
    Idempotent: a second call replaces the handlers of the first."""
    for root in ROOTS:
        logger = logging.getLogger(root)
        logger.handlers = [_Stream("stdout", stdout=True), _Stream("stderr", stdout=False)]
        logger.setLevel(logging.DEBUG if verbose else logging.INFO)
        logger.propagate = False
