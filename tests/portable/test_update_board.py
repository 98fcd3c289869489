"""Signed updates on a board, in CPython and in the real MicroPython
interpreter (tests/mpy/runner.mjs): the update command, the download (at
once, or in chunks that come later and out of order, as through an outbox
or a mesh node), verification before install, the switch, main.py's boot
choice, commit after a healthy cycle, rollback after too many boots or
past the health deadline, each bad package refused with its reason, and a
power cut before any file operation of an install leaving a whole version."""

import hashlib
import json

from update_fakes import (
    DEVICE,
    FOREIGN_SECRET,
    Clock,
    Files,
    Hes,
    PowerCut,
    Scratch,
    Uplink,
    announce,
    bundle,
    config,
    cut_disk,
    install_directly,
    package,
    slots,
)

from firmware import main as stub
from firmware.board_commands import BoardCommands
from firmware.board_update import BoardUpdater

OLD = bundle("1.0.0")
NEW = bundle("1.1.0")


class Board:
    """One boot of a board: its commands and updater over the scratch folder."""

    def __init__(self, uplink, clock=None, cfg=None, next_seq=5):
        from update_fakes import ROOT_KEY

        from agent.envelope import MemoryBootStore, Sealer
        self.resets = 0
        self.clock = clock or Clock()
        files = Files("data")
        sealer = Sealer(DEVICE, ROOT_KEY, MemoryBootStore())
        self.commands = BoardCommands(cfg or config(), sealer, uplink, files, self.clock)
        self.updater = BoardUpdater(cfg or config(), self.commands, uplink, files, "data",
                                    self.clock, self.reset)
        self.updater.boot(next_seq)           # its first batch will be seq ``next_seq``

    def reset(self):
        self.resets += 1


def results(hes, uplink):
    out = [hes.result(s) for s in uplink.results]
    uplink.results = []
    return out


def whole(slot):
    m = json.loads(open("wum/%s/manifest.json" % slot).read())
    for path, info in m["files"].items():
        data = open("wum/%s/%s" % (slot, path), "rb").read()
        assert hashlib.sha256(data).digest().hex() == info["sha256"], path
    return m["version"]


def update(hes, uplink, board, pkg, version):
    uplink.packages[announce(pkg, version)["package"]] = pkg
    uplink.inbox.append(hes.command("update", announce(pkg, version)))
    board.commands.take()
    for _ in range(40):
        if board.resets:
            break
        board.updater.step()


def test_a_good_update_installs_and_reports_healthy():
    with Scratch():
        install_directly(slots(), OLD)
        hes, up = Hes(), Uplink({})
        board = Board(up)
        update(hes, up, board, package(NEW), "1.1.0")
        assert board.resets == 1 and results(hes, up) == []        # no result yet
        st = slots().state()
        assert st["trial"]["version"] == "1.1.0" and st["trial"]["counter"] == 1
        slot = stub.choose()                        # main.py after the reset
        assert slot == st["active"] and whole(slot) == "1.1.0"
        board = Board(up, next_seq=5)
        board.updater.after_cycle(True, -1)         # read, nothing acknowledged yet
        board.updater.after_cycle(True, 4)          # a batch the old version sealed
        assert slots().state()["trial"] is not None
        board = Board(up, next_seq=6)               # a reboot: its first batch is still 5
        assert slots().state()["trial"]["first_seq"] == 5
        board.updater.after_cycle(False, 5)         # no meter read in this cycle
        assert slots().state()["trial"] is not None
        board.updater.after_cycle(True, 5)
        st = slots().state()
        assert st["trial"] is None and st["last"]["outcome"] == "healthy"
        (doc,) = results(hes, up)
        assert doc["state"] == "executed" and doc["counter"] == 1 and doc["id"] == "c-1"
        assert doc["result"] == {"version": "1.1.0", "previous": "1.0.0", "slot": slot}
        Board(up)                                   # a later boot reports nothing again
        assert results(hes, up) == []


def test_chunks_that_come_later_and_out_of_order():
    with Scratch():
        install_directly(slots(), OLD)
        hes, up = Hes(), Uplink({}, later=True)
        board = Board(up)
        pkg = package(NEW)
        update(hes, up, board, pkg, "1.1.0")
        assert board.resets == 1 and whole(stub.choose()) == "1.1.0"
        # every request was a sealed kind-5 envelope of this device
        from agent.envelope import peek
        assert up.requests and all(peek(r).kind == 5 and peek(r).device == DEVICE
                                   for r in up.requests)


def test_a_version_that_keeps_failing_is_rolled_back_by_main_py():
    with Scratch():
        install_directly(slots(), OLD)
        hes, up = Hes(), Uplink({})
        update(hes, up, Board(up), package(NEW), "1.1.0")
        new = slots().state()["active"]
        for boot in (1, 2, 3):                      # it crashes before committing
            assert stub.choose() == new
            assert slots().state()["trial"]["boots"] == boot
        old = stub.choose()                         # the 4th boot: back to the old one
        assert old != new and whole(old) == "1.0.0"
        Board(up)
        (doc,) = results(hes, up)
        assert doc["state"] == "failed" and doc["reason"] == (
            "rolled_back: version 1.1.0 did not report healthy in 3 boots")


def test_a_version_that_runs_but_never_proves_healthy_is_rolled_back():
    with Scratch():
        install_directly(slots(), OLD)
        hes, up = Hes(), Uplink({})
        update(hes, up, Board(up), package(NEW), "1.1.0")
        stub.choose()
        clock = Clock()
        board = Board(up, clock)
        board.updater.after_cycle(True, 4)          # it reads, none of its batches acknowledged
        clock.t += 599
        board.updater.watch()
        assert board.resets == 0
        clock.t += 2
        board.updater.watch()
        assert board.resets == 1 and whole(stub.choose()) == "1.0.0"
        Board(up)
        (doc,) = results(hes, up)
        assert doc["reason"] == "rolled_back: version 1.1.0 did not report healthy within 600s"


def test_bad_packages_are_refused_with_a_clear_reason():
    with Scratch():
        install_directly(slots(), OLD)
        hes, up = Hes(), Uplink({})
        board = Board(up)
        good = package(NEW)
        tampered = bytearray(good)
        tampered[-5] ^= 1
        cases = [
            (package(NEW, secret=None), "1.1.0", "refused: unsigned: package 1.1.0 carries no "
                                                 "release signature"),
            (bytes(tampered), "1.1.0", "refused: tampered: manifest.json differs from the hash "
                                       "the signature covers"),
            (package(NEW, secret=FOREIGN_SECRET), "1.1.0", "refused: foreign_key: package 1.1.0 "
                                                           "is signed by release key"),
            (package(bundle("0.9.0")), "0.9.0", "refused: downgrade: package version 0.9.0 is "
                                                "not newer than the installed 1.0.0"),
            (package(bundle("1.2.0", board="esp32")), "1.2.0", "refused: wrong_board"),
        ]
        for pkg, version, want in cases:
            a = announce(pkg, version)
            if "wrong_board" in want:
                a["board"] = "esp32"
            up.packages[a["package"]] = pkg
            up.inbox.append(hes.command("update", a))
            board.commands.take()
            for _ in range(10):
                board.updater.step()
            (doc,) = results(hes, up)
            assert doc["state"] == "failed" and doc["reason"].startswith(want), (want, doc)
        assert board.resets == 0 and slots().state()["trial"] is None
        assert whole(stub.choose()) == "1.0.0"


def test_commands_other_than_update_and_replays_are_refused():
    with Scratch():
        install_directly(slots(), OLD)
        hes, up = Hes(), Uplink({})
        board = Board(up)
        sealed = hes.command("disconnect", {})
        up.inbox.append(sealed)
        board.commands.take()
        (doc,) = results(hes, up)
        assert doc["reason"] == "unsupported: a board executes update only"
        # delivered again (the HES had not got the result): the result again, nothing rerun
        assert board.commands.receive(sealed) == "duplicate"
        assert results(hes, up) == [doc]
        # the same counter with another body: a replay
        assert board.commands.receive(hes.command("reconnect", {}, counter=1)) == \
            "refused:replayed"
        assert board.commands.receive(b"\x01garbage") == "refused:bad_envelope"
        assert results(hes, up) == [] and board.commands.refused == {"replayed": 1,
                                                                      "bad_envelope": 1}


def test_a_power_cut_before_any_file_operation_leaves_a_whole_version():
    """The install and switch exactly as ``BoardUpdater`` runs them, cut
    before the 1st, 2nd, ... file operation; main.py then boots a whole
    version every time."""
    from agent.slots import Slots
    from agent.update_package import payload_entries, read_head
    pkg = package(NEW)
    n, seen = 1, {}
    while True:
        with Scratch():
            install_directly(slots(), OLD)
            with open("data/p.wup", "wb") as f:
                f.write(pkg)
            s = Slots("wum", cut_disk(n))
            cut = False
            try:
                with open("data/p.wup", "rb") as f:
                    header, _, _ = read_head(f)
                    slot = s.install(payload_entries(f, header))
                s.switch(slot, {"counter": 9})
            except PowerCut:
                cut = True
            v = whole(stub.choose())
            seen[v] = seen.get(v, 0) + 1
        if not cut:
            break
        n += 1
    assert seen["1.0.0"] == n - 1 and seen["1.1.0"] == 1 and n > 10, seen
