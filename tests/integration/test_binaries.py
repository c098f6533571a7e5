"""The one rule for external binaries: skip locally with the package to install, fail under CI=true."""

from __future__ import annotations

import pytest

from tests._procs import require_binary

pytest_plugins = ["pytester"]

MISSING = "csf-test-no-such-binary"


def test_a_present_binary_is_found_by_name_or_path() -> None:
    sh = require_binary("sh")
    assert sh.endswith("/sh")
    assert require_binary(sh) == sh


@pytest.mark.parametrize("ci", ["", "false", "0"])
def test_a_missing_binary_skips_locally_naming_the_package(ci: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match=f"{MISSING} is not installed .*install-system-deps"):
        require_binary(f"/nonexistent/{MISSING}")


@pytest.mark.parametrize("ci", ["true", "TRUE", "True"])
def test_a_missing_binary_fails_under_ci_whatever_the_case(ci: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match=f"CI=true but {MISSING} is not installed"):
        require_binary(MISSING)


def test_the_needs_binary_marker_and_the_binary_fixture_are_enforced(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest("from tests.conftest import pytest_runtest_setup, binary  # noqa: F401\n")
    pytester.makeini("[pytest]\nmarkers =\n    needs_binary(name): needs an external binary\n")
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.needs_binary("{MISSING}")
        def test_marked():
            raise AssertionError("must not run without its binary")

        def test_fixture(binary):
            binary("{MISSING}")
            raise AssertionError("must not get here")

        @pytest.mark.needs_binary("sh")
        def test_present(binary):
            assert binary("sh").endswith("/sh")
        """
    )
    pytester.syspathinsert(str(pytester.path))
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    monkeypatch.setattr(sys, "path", [root, *sys.path])
    monkeypatch.delenv("CI", raising=False)
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1, skipped=2)
    monkeypatch.setenv("CI", "true")
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1, failed=1, errors=1)
