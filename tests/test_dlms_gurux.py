"""Gurux's Python DLMS library (gurux-dlms 1.0.203, GPL-2.0: a test-only oracle
from tests/oracles.txt, imported only in tests/) as a second independent
implementation, both ways over HDLC on a pseudo-terminal:

- its client (``GXDLMSClient`` / ``GXDLMSSecureClient``, driven by the small
  pyserial loop below) reads our simulator (``hil.dlms_meter``): association
  with no security, LLS and HLS-GMAC with suite-0 ciphering; registers with
  their scaler and unit, the clock, the load profile by range;
- its server (``tests/gurux_server.py``: registers, a clock, a logical device
  name and no serial number, a load profile) is read by ``wum read --json`` in
  its own process and by the agent's cycle.
"""

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

gurux = pytest.importorskip("gurux_dlms")

import serial  # noqa: E402
from gurux_dlms import GXByteBuffer, GXDLMSClient, GXDLMSException, GXReplyData  # noqa: E402
from gurux_dlms.enums import Authentication, InterfaceType, Security  # noqa: E402
from gurux_dlms.objects import GXDLMSClock, GXDLMSProfileGeneric, GXDLMSRegister  # noqa: E402
from gurux_dlms.secure import GXDLMSSecureClient  # noqa: E402

from agent.archive import PROFILE, SNAPSHOT, Archive  # noqa: E402
from agent.clock import ScaledClock  # noqa: E402
from agent.config import BusConfig, Config, MeterConfig  # noqa: E402
from agent.cycle import BusCycle  # noqa: E402
from agent.timefmt import rfc3339  # noqa: E402
from drivers.dlms import cosem  # noqa: E402
from drivers.units import unit_code  # noqa: E402
from hil.bus import Bus  # noqa: E402
from hil.dlms_meter import DlmsMeter, register_format  # noqa: E402
from hil.model import HOUR, ORIGIN, REGISTERS, MeterModel  # noqa: E402
from hil.ports import open_port  # noqa: E402
from tests import gurux_server as gs  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T = ORIGIN + 12 * 86400 + 1234          # a fixed true time: values are reproducible
EK = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
AK = bytes.fromhex("d0d1d2d3d4d5d6d7d8d9dadbdcdddedf")
PASSWORD = b"k3y-2026"
BAUD = 115200
MODES = ["none", "lls", "hls"]


# -- Gurux's client reads our simulator ---------------------------------------------------
class GuruxSession:
    """Gurux's client on a pyserial port: it builds every frame and parses every
    answer; this loop only carries bytes until ``getData`` has a whole reply."""

    def __init__(self, path, mode, physical=17, password=PASSWORD, ek=EK, ak=AK):
        address = GXDLMSClient.getServerAddress(1, physical)
        if mode == "hls":
            self.client = GXDLMSSecureClient(True, 16, address, Authentication.HIGH_GMAC, None,
                                             InterfaceType.HDLC)
            c = self.client.ciphering
            c.security = Security.AUTHENTICATION_ENCRYPTION
            c.systemTitle, c.blockCipherKey, c.authenticationKey = b"GURUX001", ek, ak
        else:
            auth = Authentication.LOW if mode == "lls" else Authentication.NONE
            self.client = GXDLMSClient(True, 16, address, auth,
                                       password if mode == "lls" else None, InterfaceType.HDLC)
        self.port = serial.Serial(path, BAUD, timeout=0.05)

    def _frame(self, data, reply, deadline=3.0):
        self.port.write(bytes(data))
        buf, notify = GXByteBuffer(), GXReplyData()
        end = time.monotonic() + deadline
        while not self.client.getData(buf, reply, notify):
            if time.monotonic() > end:
                raise TimeoutError("no whole answer to %s" % bytes(data).hex())
            chunk = self.port.read(4096)
            if chunk:
                buf.set(chunk)
        if reply.error:
            raise GXDLMSException(reply.error)

    def request(self, messages):
        """Send each message (GET-next / RR for more blocks); -> the reply."""
        reply = GXReplyData()
        for data in messages if isinstance(messages, list) else [messages]:
            reply.clear()
            self._frame(data, reply)
            while reply.isMoreData():
                self._frame(self.client.receiverReady(reply), reply)
        return reply

    def open(self):
        self.client.parseUAResponse(self.request(self.client.snrmRequest()).data)
        self.client.parseAareResponse(self.request(self.client.aarqRequest()).data)
        if self.client.getIsAuthenticationRequired():      # HLS passes 3 and 4
            reply = self.request(self.client.getApplicationAssociationRequest())
            self.client.parseApplicationAssociationResponse(reply.data)
        return self

    def read(self, obj, attribute):
        reply = self.request(self.client.read(obj, attribute))
        return self.client.updateValue(obj, attribute, reply.value)

    def read_list(self, pairs):
        """GET-with-list, as many requests as Gurux splits it into."""
        values = []
        for message in self.client.readList(pairs):
            values.extend(self.request(message).value)
        self.client.updateValues(pairs, values)

    def close(self):
        try:
            self.request(self.client.disconnectRequest())
        finally:
            self.port.close()


def _our_meter(mode, **kw):
    opts = {"none": {}, "lls": dict(auth="lls", password=PASSWORD),
            "hls": dict(auth="hls", ek=EK, ak=AK)}[mode]
    model = MeterModel(3, seed=7)
    return model, DlmsMeter(model, 17, lambda: T, block_size=300, **opts, **kw)


class _OurBus:
    def __init__(self, *meters):
        self.port = open_port("pty")
        self.bus = Bus(self.port, list(meters), baud=BAUD, pace=False)

    def __enter__(self):
        self.bus.start()
        return self.port.agent_path

    def __exit__(self, *exc):
        self.bus.stop()
        self.port.close()


@pytest.mark.parametrize("mode", MODES)
def test_gurux_reads_our_registers_with_scaler_and_unit(mode):
    model, sim = _our_meter(mode)
    codes = [o for o, _ in REGISTERS if cosem.register_class(o) == cosem.REGISTER]
    regs = [GXDLMSRegister(o) for o in codes]
    with _OurBus(sim) as path:
        s = GuruxSession(path, mode).open()
        try:
            s.read_list([(r, 3) for r in regs])       # scaler_unit first: Gurux scales with it
            s.read_list([(r, 2) for r in regs])
        finally:
            s.close()
    want, units = model.registers(T), dict(REGISTERS)
    assert len(regs) == 25
    for r in regs:
        name = r.logicalName
        assert r.scaler == 10.0 ** register_format(name)[1], name
        assert r.unit == unit_code(units[name]), name
        assert r.value == pytest.approx(want[name], rel=1e-12, abs=1e-12), name


@pytest.mark.parametrize("mode", MODES)
def test_gurux_reads_our_load_profile_by_range(mode):
    model, sim = _our_meter(mode)
    start = (T - 24 * HOUR) // HOUR * HOUR
    pg = GXDLMSProfileGeneric("1.0.99.1.0.255")
    with _OurBus(sim) as path:
        s = GuruxSession(path, mode).open()
        try:
            for attribute in (3, 4, 5, 6):   # columns, period, sort method and object
                s.read(pg, attribute)
            reply = s.request(s.client.readRowsByRange(
                pg, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(T, UTC)))
            s.client.updateValue(pg, 2, reply.value)
        finally:
            s.close()
    got = [(int(row[0].value.timestamp()), row[1:]) for row in pg.buffer]
    want = [(ts, [v[o] for o in v] + [0]) for ts, v in model.profile(start, T)]
    assert len(got) == 25 and got == want     # null (compressed) clocks filled in by Gurux


def test_gurux_reads_our_clock():
    model, sim = _our_meter("none")
    clock = GXDLMSClock()
    with _OurBus(sim) as path:
        s = GuruxSession(path, "none").open()
        try:
            s.read(clock, 2)
            s.read(clock, 3)
        finally:
            s.close()
    assert clock.time.value.timestamp() == int(model.clock(T))
    # time_zone (class 8 attribute 3) has the sign of the date-time deviation
    # (Blue Book 4.5.1 / 4.1.6.1: both "deviation of local time to UTC", CET -60)
    assert clock.timeZone == -60
    assert clock.time.value.utcoffset() == timedelta(minutes=60)


@pytest.mark.parametrize("mode", ["lls", "hls"])
def test_gurux_with_the_wrong_secret_is_refused(mode):
    _, sim = _our_meter(mode)
    with _OurBus(sim) as path:
        s = GuruxSession(path, mode, password=b"wrong-pw", ak=bytes(16))
        try:
            with pytest.raises(GXDLMSException):
                s.open()
        finally:
            s.port.close()
    assert not sim.associated


# -- our client reads Gurux's server ----------------------------------------------------
def test_wum_read_json_reads_the_gurux_meter_by_its_logical_device_name():
    start, codes = T - 24 * HOUR, ",".join(o for o, *_ in gs.REGISTERS)
    with gs.GuruxMeter(1, lambda: T) as meter:
        r = subprocess.run(
            [sys.executable, "-m", "agent.cli", "read", "--port", meter.path, "--protocol",
             "dlms", "--address", "1", "--registers", codes, "--load-profile", "--from",
             str(start), "--to", str(T), "--json"], cwd=ROOT, capture_output=True, text=True,
            timeout=60, env={**os.environ, "WUM_CLOCK": "%d,0,1e-12" % T})
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["meter"] == {"protocol": "dlms", "address": "1", "id": gs.LDN}
    assert {x["obis"]: (x["value"], x["unit"]) for x in doc["registers"]} == \
        gs.expected_registers()
    assert {x["ts"] for x in doc["registers"]} == {rfc3339(T)}    # the meter's clock
    want = [(ts, v) for ts, v in gs.profile_rows(T) if start <= ts <= T]
    assert [(datetime.fromisoformat(x["ts"]).timestamp(), x["values"]) for x in doc["profile"]] \
        == want and len(want) == 24


def test_agent_cycle_reads_the_gurux_meter(tmp_path):
    clock = ScaledClock(T, 1.0)
    with gs.GuruxMeter(1, clock.now) as meter:
        cfg = Config(concentrator_id="DC", archive=str(tmp_path / "a.db"), retries=1,
                     transport="none", initial_backfill=6 * HOUR,
                     buses=(BusConfig("bus1", meter.path, BAUD, "dlms", False, 1.0,
                                      (MeterConfig("1", "dlms"),)),))
        arc = Archive(cfg.archive).open()
        try:
            (res,) = BusCycle(cfg.buses[0], cfg, arc, clock).run(arc.begin_cycle(clock.now()))
            assert (res.status, res.error) == ("read", None)
            assert arc.serial(res.meter) == gs.LDN
            (snap,) = arc.rows(res.meter, kind=SNAPSHOT)
            rows = [(r.ts, r.values) for r in arc.rows(res.meter, kind=PROFILE)]
        finally:
            arc.close()
    assert snap.values == {o: v for o, (v, _) in gs.expected_registers().items()}
    assert rows == [(ts, v) for ts, v in gs.profile_rows(T) if ts >= T - 6 * HOUR]
    assert abs(res.clock_offset) < 2 and meter.requests > 20


def test_our_client_opens_lls_with_the_gurux_meter_and_a_wrong_password_is_refused():
    import drivers.dlms as dlms
    from drivers import MeterRefused

    with gs.GuruxMeter(1, lambda: T, password=PASSWORD) as meter:
        with pytest.raises(MeterRefused) as refused:
            dlms.open_client(meter.path, "1", BAUD, auth="lls", password=b"wrong-pw", retries=1)
        c = dlms.open_client(meter.path, "1", BAUD, auth="lls", password=PASSWORD)
        try:
            regs = c.read_registers(["1.0.32.7.0.255"])
        finally:
            c.close()
    assert refused.value.fields["diagnostic"] == 13       # authentication-failure
    assert [(r.obis, r.value, r.unit) for r in regs] == [("1.0.32.7.0.255", 230.1, "V")]
