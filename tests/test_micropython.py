"""Runs the portable tests (tests/portable/test_*.py) in the real MicroPython
interpreter: the official WebAssembly port under Node.js, via
tests/mpy/runner.mjs. One test per portable test file, plus one that imports
every strict module of tests/mpy/portable.txt.

Outside CI a missing Node.js or MicroPython package skips these tests; with
the ``CI`` environment variable set it fails them, so a CI image that lost
MicroPython cannot pass silently. ``make mpy`` installs the package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "tests" / "mpy" / "runner.mjs"
PKG = "@micropython/micropython-webassembly-pyscript"
PORTABLE_TESTS = sorted(p.name for p in (ROOT / "tests" / "portable").glob("test_*.py"))

pytestmark = pytest.mark.mpy


def _package() -> Path:
    base = os.environ.get("WUM_MPY_NODE_MODULES") or str(ROOT / ".cache" / "node" / "node_modules")
    return Path(base) / PKG / "micropython.mjs"


def _node_or_miss() -> str:
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("Node.js (`node`) not on PATH")
    if not _package().exists():
        missing.append("%s not installed at %s (run `make mpy`)" % (PKG, _package()))
    if missing:
        msg = "MicroPython runner unavailable: " + "; ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    assert node is not None
    return node


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    node = _node_or_miss()
    try:
        return subprocess.run([node, str(RUNNER), *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=240)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        pytest.fail("MicroPython run %s timed out after 240 s (a test loops?):\n%s"
                    % (" ".join(args), out), pytrace=False)


@pytest.mark.parametrize("name", PORTABLE_TESTS)
def test_portable_file_in_micropython(name: str) -> None:
    r = _run("tests/portable/" + name)
    if r.returncode != 0:
        pytest.fail("MicroPython run of %s failed (rc=%d):\n%s%s"
                    % (name, r.returncode, r.stdout, r.stderr), pytrace=False)
    assert "PASS " in r.stdout


def test_portable_modules_import_in_micropython() -> None:
    r = _run("--check-imports")
    if r.returncode != 0:
        pytest.fail("a strict module of tests/mpy/portable.txt does not import under "
                    "MicroPython:\n%s%s" % (r.stdout, r.stderr), pytrace=False)


def test_runner_reports_failures() -> None:
    """The runner must not pass a failing test: run it on a deliberately broken
    copy of the repo layout and check the exit code and the FAIL line."""
    node = _node_or_miss()
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        repo = Path(d)
        (repo / "tests" / "mpy").mkdir(parents=True)
        (repo / "tests" / "portable").mkdir()
        (repo / "tests" / "mpy" / "portable.txt").write_text("m.py\n")
        (repo / "m.py").write_text("def f():\n    return 1\n")
        (repo / "tests" / "portable" / "test_x.py").write_text(
            "import m\ndef test_ok():\n    assert m.f() == 1\n"
            "def test_bad():\n    assert m.f() == 2\n")
        env = dict(os.environ, WUM_MPY_NODE_MODULES=str(_package().parents[2]))
        r = subprocess.run([node, str(RUNNER), "--repo", str(repo)], capture_output=True,
                           text=True, timeout=120, env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "PASS tests/portable/test_x.py::test_ok" in r.stdout
    assert "FAIL tests/portable/test_x.py::test_bad" in r.stdout


def test_missing_micropython_fails_in_ci_and_skips_outside(tmp_path: Path) -> None:
    """With the package absent, CI=1 turns the MicroPython tests into failures;
    without CI they are skipped."""
    import sys
    target = "tests/test_micropython.py::test_portable_modules_import_in_micropython"
    base = {k: v for k, v in os.environ.items() if k != "CI"}
    base["WUM_MPY_NODE_MODULES"] = str(tmp_path / "nowhere")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", target]
    ci = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                        env=dict(base, CI="true"))
    assert ci.returncode == 1, ci.stdout
    assert "MicroPython runner unavailable" in ci.stdout
    local = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=base)
    assert local.returncode == 0, local.stdout
    assert "1 skipped" in local.stdout
