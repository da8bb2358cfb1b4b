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


def test_setup_py_allows_only_tested_versions():
    """setup.py bounds Ray and Optuna to TESTED: pip cannot install a version the search refuses."""
    import re

    setup = (ROOT / "setup.py").read_text()
    for package, (low, high) in compat.TESTED.items():
        found = re.search(rf'"{package}(\[[^\]]*\])?(?P<spec>[^"]*)"', setup)
        assert found and found["spec"] == f">={low},<{high}", (package, found and found["spec"])


def test_private_ray_and_optuna_access_only_in_compat():
    """Private Ray/Optuna modules and attributes are reached through search/compat.py alone."""
    import re

    private = re.compile(r"\b(ray|optuna)(\.[A-Za-z]\w*)*\._\w|\._(ot_\w+|completed_trials|trial_runs|storage|"
                         r"trial_id)\b|\"_trial_runs\"")
    for path in sorted((ROOT / "search").glob("*.py")) + sorted((ROOT / "auttention").glob("*.py")):
        if path.name == "compat.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0]
            assert not private.search(code), f"{path.name}:{number}: {line.strip()}"
