# The board's boot stub (copied to the filesystem root as main.py by
# `wum flash`). Picks the bundle folder to boot from wum/boot.json ("a" or
# "b"), puts it first on sys.path and runs the agent. Kept tiny and plain
# Python: it is the one file an update never replaces.
#
# An update switches wum/boot.json to the new folder with a "trial": every
# boot of a trial is counted here, and past its "max_boots" without the new
# version committing (firmware.board_update), the previous folder is booted
# again and the rollback recorded — the same rule as agent.slots.Slots.boot,
# written out so nothing from a folder on trial runs before the choice.
import json
import os
import sys

STATE = "wum/boot.json"


def _load():
    for name in (STATE, STATE + ".tmp"):
        try:
            with open(name) as f:
                st = json.load(f)
            if st.get("active") in ("a", "b"):
                return st
        except (OSError, ValueError, AttributeError):
            pass
    return {"active": "a"}


def _whole(slot):
    try:
        os.stat("wum/%s/manifest.json" % slot)
        return True
    except OSError:
        return False


def _save(st):
    with open(STATE + ".tmp", "w") as f:
        json.dump(st, f)
    try:
        os.rename(STATE + ".tmp", STATE)
    except OSError:                 # a filesystem that will not rename over a file
        os.remove(STATE)
        os.rename(STATE + ".tmp", STATE)


def choose():
    st = _load()
    t = st.get("trial")
    if t:
        t["boots"] = t.get("boots", 0) + 1
        back = st.get("previous")
        if t["boots"] > t.get("max_boots", 3) and back and _whole(back):
            st = {"active": back, "previous": None, "trial": None, "last": {
                "outcome": "rolled_back", "reason": "version %s did not report healthy in %d "
                "boots" % (t.get("version"), t["boots"] - 1), "version": t.get("version"),
                "from": t.get("from"), "counter": t.get("counter", 0),
                "command": t.get("command", ""), "ts": 0}}
        _save(st)
    slot = st.get("active", "a")
    if not _whole(slot) and _whole("b" if slot == "a" else "a"):
        slot = "b" if slot == "a" else "a"
    return slot


if __name__ == "__main__":
    sys.path.insert(0, "wum/" + choose())
    import firmware.board  # noqa: E402
    firmware.board.run()
