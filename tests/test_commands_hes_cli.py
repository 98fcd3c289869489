"""``hes-lite command …`` and ``hes-lite keys command-key`` as a user runs
them (real subprocesses on a real store): the public key, queueing each op
from its options, the command object, status, ``--wait`` exit codes while
the command is delivered and answered through the HES's own paths."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from hes_lite.audit import Auditor
from hes_lite.commands import CommandService
from hes_lite.ingest import Ingestor
from hes_lite.signing import CommandSigner
from hes_lite.store import open_store
from tests.command_agent import DISCONNECTED, TARIFF, TARIFF_SIGNED, AgentSide

KEY = bytes.fromhex("8899aabbccddeeff0011223344556677" * 2)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBJECT_KEYS = {"id", "meter", "concentrator", "op", "args", "state", "reason", "result",
               "created", "updated"}


def hes(*args, ok=True):
    p = subprocess.run([sys.executable, "-m", "hes_lite.cli", *args], capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


class Run:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys):
    """The same command line in this process (argument parsing to printing),
    for the many small calls; the subprocess runs cover the real binary."""
    from hes_lite.cli import main

    def run(*args, ok=True):
        capsys.readouterr()
        rc = main(list(args))
        out, err = capsys.readouterr()
        if ok:
            assert rc == 0, err
        return Run(rc, out, err)
    return run


@pytest.fixture
def db(db_url):
    path = db_url
    s = open_store(path)
    s.add_key("DC-C", 0, KEY, 0.0)
    Ingestor(s).submit(AgentSide("DC-C", KEY, boot=7).batch()[1])
    s.close()
    return path


def test_command_key_printed_created_once(db):
    first = hes("keys", "command-key", "--db", db).stdout
    assert len(first) == 65 and bytes.fromhex(first.strip())
    assert hes("keys", "command-key", "--db", db).stdout == first
    log = [json.loads(x) for x in hes("audit", "--json", "--db", db).stdout.splitlines()]
    assert [e["action"] for e in log] == ["command_key.create"]
    s = open_store(db)
    assert s.command_key().public.hex() == first.strip()
    assert s.command_key().private.hex() not in hes("audit", "--db", db).stdout


def test_each_op_from_its_options(db, tmp_path, cli):
    hes = cli
    cal = tmp_path / "tou.json"
    cal.write_text(json.dumps(TARIFF))
    runs = [
        (["disconnect"], {}),
        (["read", "--register", "1.0.1.8.0.255", "--register", "1.0.2.8.0.255", "--from",
          "2026-06-01T00:00:00Z", "--to", "1780275600"],
         {"registers": ["1.0.1.8.0.255", "1.0.2.8.0.255"],
          "profile": {"from": 1780272000, "to": 1780275600}}),
        (["tariff", "--calendar", str(cal)], TARIFF_SIGNED),
        (["limit", "--threshold-normal", "6000", "--min-over", "30"],
         {"threshold_normal": 6000, "min_over_threshold_duration": 30}),
        (["send", "--op", "limit", "--args", '{"threshold_emergency": 9000}'],
         {"threshold_emergency": 9000}),
    ]
    ids = []
    for argv, args in runs:
        out = hes("command", *argv, "--meter", "DC-C-m1", "--db", db, "--json").stdout
        obj = json.loads(out)
        assert set(obj) == OBJECT_KEYS and obj["args"] == args and obj["state"] == "queued"
        assert obj["concentrator"] == "DC-C" and obj["meter"] == "DC-C-m1"
        ids.append(obj["id"])
    cfg = json.loads(hes("command", "config", "--concentrator", "DC-C", "--set",
                         "schedule.period=1800", "--set", "retention.days=30", "--db", db,
                         "--json").stdout)
    assert (cfg["meter"], cfg["args"]) == (None, {"schedule": {"period": 1800},
                                                  "retention": {"days": 30}})
    listed = json.loads(hes("command", "status", "--meter", "DC-C-m1", "--json", "--db",
                            db).stdout)
    assert [o["id"] for o in listed] == ids[::-1]
    one = json.loads(hes("command", "status", ids[0], "--json", "--db", db).stdout)
    assert one == listed[-1]
    text = hes("command", "status", ids[0], "--db", db).stdout.split("\t")
    assert text[:5] == [ids[0], "queued", "disconnect", "DC-C-m1", "DC-C"]
    # refusals: exit 2, the reason on stderr, nothing queued
    for argv, why in ((["limit", "--meter", "DC-C-m1"], "bad_args"),
                      (["disconnect", "--meter", "nope"], "unknown_meter"),
                      (["time", "--meter", "DC-C-m1", "--args", '{"x": 1}'], "bad_args")):
        p = hes("command", *argv, "--db", db, ok=False)
        assert p.returncode == 2 and why in p.stderr and p.stdout == ""
    assert hes("command", "status", "--db", db, ok=False).returncode == 2
    assert hes("command", "status", "c-none", "--db", db, ok=False).returncode == 1
    assert len(open_store(db).commands()) == 6


def answer(db, state, reason=None, result=None, found=None):
    """Play the HES's delivery and the agent's answer on the same database."""
    s = open_store(db)
    audit = Auditor(s)
    commands = CommandService(s, CommandSigner(s, audit), audit)
    agent = AgentSide("DC-C", KEY, commands.signer.public)
    deadline = time.monotonic() + 20
    while not commands.pending("DC-C"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (rec,) = commands.pending("DC-C")
    cmd = agent.open(commands.seal("DC-C", [rec])[0])
    commands.delivered([rec.id])
    commands.submit_result(agent.result(cmd, state, reason, result), "DC-C", cmd.counter)
    if found is not None:
        found.append(cmd.id)
    s.close()


def test_wait_exits_0_only_when_executed(db):
    for state, reason, rc in (("executed", None, 0), ("failed", "rate_limited", 1)):
        found = []
        t = threading.Thread(target=answer, args=(db, state, reason,
                                                  DISCONNECTED if reason is None else None,
                                                  found))
        t.start()
        p = hes("command", "disconnect", "--meter", "DC-C-m1", "--wait", "30", "--json",
                "--db", db, ok=False)
        t.join()
        obj = json.loads(p.stdout)
        assert p.returncode == rc and obj["id"] == found[0], p.stderr
        assert (obj["state"], obj["reason"]) == (state, reason)
    # nobody answers: --wait gives up, exit 1, the id still printed
    p = hes("command", "time", "--meter", "DC-C-m1", "--wait", "0.3", "--db", db, ok=False)
    assert p.returncode == 1 and p.stdout.strip().startswith("c-")
