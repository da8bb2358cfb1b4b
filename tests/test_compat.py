"""search/compat.py: the versions its private Ray/Optuna accesses were checked against."""

from __future__ import annotations

from pathlib import Path

import pytest

from auttention.errors import UserError
from search import compat

ROOT = Path(__file__).resolve().parent.parent


def test_tested_versions_pass():
    assert compat.unsupported({"ray": "2.60.0", "optuna": "5.0.0"}) is None
    assert compat.unsupported({"ray": "2.60.3", "optuna": "5.0.1"}) is None


@pytest.mark.parametrize("versions, named", [
    ({"ray": "2.61.0", "optuna": "5.0.0"}, "ray 2.61.0"),
    ({"ray": "2.59.9", "optuna": "5.0.0"}, "ray 2.59.9"),
    ({"ray": "3.0.0.dev0", "optuna": "5.0.0"}, "ray 3.0.0.dev0"),
    ({"ray": "2.60.0", "optuna": "4.5.0"}, "optuna 4.5.0"),
    ({"ray": "2.60.0", "optuna": None}, "optuna is not installed"),
])
def test_an_untested_version_is_one_line_naming_it_and_what_to_install(versions, named):
    line = compat.unsupported(versions)
    package = named.split()[0]
    low, high = compat.TESTED[package]
    assert line and "\n" not in line and named in line
    assert f"pip install '{package}>={low},<{high}'" in line


def test_constraints_pin_tested_versions():
    """constraints.txt pins versions TESTED states: `make install` gives a search that starts."""
    pins = dict(line.strip().split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.lstrip().startswith("#"))
    assert compat.unsupported({package: pins.get(package) for package in compat.TESTED}) is None
    installed = compat.installed_versions()
    assert set(installed) == set(compat.TESTED) and all(installed.values())
    compat.check_versions()


def test_check_versions_stops_with_a_user_error(monkeypatch):
    monkeypatch.setattr(compat, "installed_versions", lambda: {"ray": "2.40.0", "optuna": "5.0.0"})
    with pytest.raises(UserError, match=r"^ray 2\.40\.0 is installed"):
        compat.check_versions()


def test_release_parts():
    assert compat._release("2.60.0rc1") == (2, 60, 0)
    assert compat._release("5.0") == (5, 0, 0)
