# The board's boot stub (copied to the filesystem root as main.py by
# `wum flash`). Picks the active bundle folder from wum/boot.json ("a" or "b";
# the update path switches it), puts it first on sys.path and runs the agent.
# Kept tiny and plain Python: it is the one file an update never replaces.
import json
import sys

try:
    with open("wum/boot.json") as f:
        _slot = json.load(f).get("active", "a")
except (OSError, ValueError):
    _slot = "a"
sys.path.insert(0, "wum/" + _slot)

import firmware.board  # noqa: E402

firmware.board.run()
