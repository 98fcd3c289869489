"""The Linux bundle an update ships holds exactly the current sources
(``firmware.build``): the wheel is built from a clean copy of the source
tree's files, so a stray module an older build left in ``build/lib`` (or
an egg-info, or bytecode) never reaches a concentrator, and a module just
written (not yet committed) does."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

from firmware.build import source_files
from tests import update_rig as rig

STRAY = "STALE = 'left by an older build'\n"


def _copy_project(dest: Path) -> Path:
    """The project's package sources (not its tests or caches) in ``dest``."""
    keep = {"pyproject.toml", "README.md", "LICENSE"}
    for name in keep:
        shutil.copy2(rig.ROOT / name, dest / name)
    for pkg in ("agent", "drivers", "hes_lite", "mesh", "firmware", "hil"):
        shutil.copytree(rig.ROOT / pkg, dest / pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def test_the_wheel_holds_the_current_sources_and_nothing_stale(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _copy_project(src)
    (src / ".gitignore").write_text("build/\n*.egg-info/\n__pycache__/\n")
    git = ["git", "-C", str(src), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "sources"], check=True)
    # what an older build left behind, and a module written since the last commit
    for stale in ("build/lib/agent/stray.py", "build/lib/agent/daemon.py",
                  "wum.egg-info/SOURCES.txt", "agent/__pycache__/stray.cpython-311.pyc"):
        (src / stale).parent.mkdir(parents=True, exist_ok=True)
        (src / stale).write_text(STRAY)
    (src / "agent" / "fresh.py").write_text("FRESH = 1\n")
    out = tmp_path / "bundle"
    r = rig.run(rig.BIN / "wum", "firmware", "build", "--target", "linux", "--source", src,
                "--out", out, timeout=300)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    with zipfile.ZipFile(out / manifest["wheel"]) as whl:
        names = set(whl.namelist())
        daemon = whl.read("agent/daemon.py")
    assert "agent/stray.py" not in names and not [n for n in names if n.endswith(".pyc")]
    assert daemon == (src / "agent" / "daemon.py").read_bytes()
    ours = {n for n in names if n.startswith("agent/")}
    assert ours == {"agent/" + p.relative_to(src / "agent").as_posix()
                    for p in (src / "agent").rglob("*") if p.is_file() and
                    "__pycache__" not in p.parts and p.suffix in (".py", ".json", ".toml",
                                                                  ".service")}
    assert "agent/fresh.py" in names
    assert not (src / "build" / "bdist.linux-x86_64").exists()    # the tree is left alone


def test_outside_a_git_checkout_the_copy_skips_build_output(tmp_path: Path) -> None:
    (tmp_path / "agent" / "__pycache__").mkdir(parents=True)
    for name in ("pyproject.toml", "agent/__init__.py", "agent/__pycache__/x.pyc",
                 "build/lib/agent/stray.py", "dist/wum-0.1.0.whl", "wum.egg-info/PKG-INFO",
                 ".venv/bin/python"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert source_files(tmp_path) == ["agent/__init__.py", "pyproject.toml"]
