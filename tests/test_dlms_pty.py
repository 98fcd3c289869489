"""The DLMS client against the simulated meters over a real pseudo-terminal
(hil.ports.open_port("pty") + hil.bus.Bus + DlmsMeter), read with
drivers.dlms.open_client(port.agent_path, ...)."""

import contextlib
import time

import pytest

import drivers.dlms as dlms
from drivers import MeterRefused, MeterTimeout, RemoteProtocolError
from drivers.dlms import apdu, hdlc
from drivers.flight import FlightRecorder
from drivers.serialio import Link
from hil.bus import Bus, FaultSpec
from hil.dlms_meter import DlmsMeter
from hil.model import HOUR, ORIGIN, MeterModel
from hil.ports import open_port

T = ORIGIN + 12 * 86400 + 1234          # a fixed true time: values are reproducible
EK = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
AK = bytes.fromhex("d0d1d2d3d4d5d6d7d8d9dadbdcdddedf")
BAUD = 115200


@contextlib.contextmanager
def bus_of(meters, faults=None, baud=BAUD, latency=0.0):
    port = open_port("pty")
    bus = Bus(port, meters, baud=baud, latency=latency, faults=faults).start()
    try:
        yield port
    finally:
        bus.stop()
        port.close()


def _meter(index, address, **kw):
    model = MeterModel(index, seed=7)
    return model, DlmsMeter(model, address, lambda: T, **kw)


def test_registers_equal_the_model_and_only_the_addressed_meter_answers():
    m1, s1 = _meter(0, 17)
    m2, s2 = _meter(1, 18)
    with bus_of([s1, s2]) as port:
        c = dlms.open_client(port.agent_path, "18", baud=BAUD)
        try:
            ident = c.identify()
            regs = c.read_registers()
        finally:
            c.close()
    assert ident.id == m2.serial and ident.protocol == "dlms"
    want = m2.registers(T)
    assert {r.obis: r.value for r in regs} == want
    units = {r.obis: r.unit for r in regs}
    assert units["1.0.1.8.0.255"] == "Wh" and units["1.0.32.7.0.255"] == "V"
    assert all(abs(r.ts - m2.clock(T)) <= 1 for r in regs)
    assert s1.requests == 0 and s2.requests >= 3


def test_load_profile_over_many_segments_and_blocks():
    model, sim = _meter(2, 33, max_info=64, block_size=120, window=2)
    start, end = T - 48 * HOUR, T
    with bus_of([sim]) as port:
        c = dlms.open_client(port.agent_path, "33", baud=BAUD, max_info=64)
        try:
            rows = c.read_load_profile(start, end)
            trips = c.round_trips
        finally:
            c.close()
    want = model.profile(start, end)
    assert [(r.ts, r.values) for r in rows] == want
    assert len(rows) == 48
    assert trips > 20          # many HDLC segments and GET blocks were needed
    assert sim.requests > 10   # GET-next per block


def test_profile_by_entry_and_clock_inference_in_the_simulator():
    from drivers.dlms import cosem, xdlms

    model, sim = _meter(3, 40)
    with bus_of([sim]) as port:
        c = dlms.open_client(port.agent_path, "40", baud=BAUD)
        try:
            cols = [cosem.CLOCK_CAPTURE] + [cosem.CaptureObject(3, o) for o in
                                            ("1.0.1.8.0.255", "1.0.2.8.0.255",
                                             "1.0.3.8.0.255", "1.0.4.8.0.255")] + \
                [cosem.CaptureObject(1, cosem.PROFILE_STATUS)]
            d = xdlms.Descriptor(7, cosem.obis_bytes(cosem.LOAD_PROFILE), 2,
                                 cosem.entry_access(1075, 1080))
            (buf,) = c._get([d])
        finally:
            c.close()
    rows = cosem.profile_rows(buf, cols, HOUR)
    last = int(T) // HOUR * HOUR
    assert [r.ts for r in rows] == [last - HOUR * k for k in range(5, -1, -1)]
    assert buf[1][1][1][0][0] == 0      # the second row's clock is null (compressed)
    assert rows[-1].values == model.profile_row(last)


def test_hls_gmac_with_suite0_ciphering():
    model, sim = _meter(4, 21, auth="hls", ek=EK, ak=AK, block_size=200)
    link = Link("", BAUD, recorder=FlightRecorder(100000))
    with bus_of([sim]) as port:
        link.url = port.agent_path
        link.connect()
        try:
            c = dlms.open_client(port.agent_path, "21", auth="hls", ek=EK, ak=AK, link=link)
            regs = c.read_registers()
            rows = c.read_load_profile(T - 24 * HOUR, T)
            c.close()
            with pytest.raises(MeterRefused):
                dlms.open_client(port.agent_path, "21", auth="hls", ek=EK, ak=bytes(16),
                                 link=link, retries=1)
        finally:
            link.close()
    assert {r.obis: r.value for r in regs} == model.registers(T)
    assert [(r.ts, r.values) for r in rows] == model.profile(T - 24 * HOUR, T)
    # Every data APDU on the wire was glo-ciphered: no plain GET request went out.
    tags = set()
    for _, _direction, raw in link.recorder.entries():
        framer = hdlc.Framer()
        framer.receive_data(raw)
        while (f := framer.next_event()) is not None:
            if isinstance(f, hdlc.Frame) and f.kind == hdlc.I and not f.segmented \
                    and f.info[:2] == b"\xe6\xe6":
                tags.add(f.info[3])
    assert 0xC8 in tags and 0xCB in tags and 0xC0 not in tags


def test_ciphered_session_without_hls_and_replay_is_refused():
    model, sim = _meter(5, 22, ek=EK, ak=AK)
    with bus_of([sim]) as port:
        c = dlms.open_client(port.agent_path, "22", ek=EK, ak=AK, baud=BAUD)
        try:
            assert {r.obis: r.value for r in c.read_registers()} == model.registers(T)
            # Replaying the meter's last ciphered answer must be refused by the counter check.
            ctx = c.assoc.security
            stale = ctx.peer_ic
            with pytest.raises(RemoteProtocolError, match="replay"):
                ctx.decrypt(_reciphered(ctx, stale))
            assert isinstance(ctx.decrypt(_reciphered(ctx, stale + 1)), bytes)
        finally:
            c.close()


def _reciphered(ctx, ic):
    from drivers.dlms import security

    content = security.protect(b"\xc4\x01\xc1\x00\x00", 0x30, ctx.peer_title, ic, ctx.ek, ctx.ak)
    return b"\xcc" + bytes((len(content),)) + content


def test_lls_password_and_clock_and_disconnect_control():
    model, sim = _meter(6, 23, auth="lls", password="k3y-2026")
    with bus_of([sim]) as port:
        with pytest.raises(MeterRefused) as err:
            dlms.open_client(port.agent_path, "23", auth="lls", password="wrong", baud=BAUD)
        assert err.value.fields["diagnostic"] == 13
        c = dlms.open_client(port.agent_path, "23", auth="lls", password="k3y-2026", baud=BAUD)
        try:
            c.set_clock(T + 3600)
            assert abs(c.read_clock() - (T + 3600)) <= 1
            c.disconnect()
            assert model.relay_connected is False
            regs = {r.obis: r.value for r in c.read_registers(["0.0.96.3.10.255"])}
            assert regs == {"0.0.96.3.10.255": 0}
            c.reconnect()
            assert model.relay_connected is True
            events = c.read_events(T - 86400, T + 10)
        finally:
            c.close()
    assert [e.code for e in events][-2:] == [59, 60]


def test_scan_finds_the_meters_that_answer():
    _, s1 = _meter(7, 17)
    _, s2 = _meter(8, 19)
    with bus_of([s1, s2]) as port:
        found = dlms.scan(port.agent_path, baud=BAUD, addresses=[16, 17, 18, 19], timeout=0.2)
    assert [m.address for m in found] == ["17", "19"]


def test_faults_five_percent_corrupt_and_one_dead_meter():
    models, sims = [], []
    for i in range(6):
        m, s = _meter(10 + i, 50 + i)
        models.append(m)
        sims.append(s)
    faults = FaultSpec.parse("crc=0.05,dead@53,wrongaddr@51=0.1,garbage=0.02", seed=11)
    timeout, retries = 0.25, 3
    link = Link("", BAUD, recorder=FlightRecorder(100000))   # big enough for the whole run
    read, dead_cost = {}, None
    with bus_of(sims, faults=faults) as port:
        link.url = port.agent_path
        link.connect()
        try:
            for i in range(6):
                t0 = time.monotonic()
                try:
                    c = dlms.open_client(port.agent_path, str(50 + i), link=link,
                                         timeout=timeout, retries=retries)
                except MeterTimeout:
                    dead_cost = time.monotonic() - t0
                    continue
                for _ in range(3):          # a few cycles so the 5 % bites
                    regs = c.read_registers()
                    rows = c.read_load_profile(T - 6 * HOUR, T)
                read[i] = (regs, rows, c.assoc.bad_frames)
                c.close()
        finally:
            link.close()
    assert sorted(read) == [0, 1, 2, 4, 5]
    for i, (regs, rows, _) in read.items():
        assert {r.obis: r.value for r in regs} == models[i].registers(T)
        assert [(r.ts, r.values) for r in rows] == models[i].profile(T - 6 * HOUR, T)
    assert dead_cost is not None and dead_cost <= timeout * retries + 0.15
    bad = [f for _, _, frames in read.values() for f in frames]
    assert bad, "5 % corruption should have produced bad frames"
    rx = "".join(raw.hex() for _, d, raw in link.recorder.entries() if d == "rx")
    assert all(f.hex() in rx for f in bad)


def test_dissect_a_ciphered_exchange_with_keys():
    from drivers.dlms import security, xdlms
    from drivers.dlms.cosem import obis_bytes

    title = b"WUMCONC1"
    ctx = security.SecurityContext(EK, AK, title)
    plain = xdlms.GetRequest(xdlms.NORMAL, [xdlms.Descriptor(3, obis_bytes("1.0.1.8.0.255"),
                                                             2)]).to_bytes()
    wire = ctx.encrypt(plain)
    out = dlms.dissect(wire, ek=EK, ak=AK, system_title=title)
    assert out["apdu"]["type"] == "Ciphered"
    assert out["apdu"]["decrypted"]["type"] == "GetRequest"
    assert isinstance(apdu.decode(plain), xdlms.GetRequest)


@pytest.mark.parametrize("mode", ["dedicated", "general"])
def test_dedicated_key_and_general_ciphering_sessions(mode):
    model, sim = _meter(9, 24, ek=EK, ak=AK)
    opts = {"dedicated_key": bytes(range(100, 116))} if mode == "dedicated" else \
        {"general_ciphering": True}
    link = Link("", BAUD, recorder=FlightRecorder(100000))
    with bus_of([sim]) as port:
        link.url = port.agent_path
        link.connect()
        try:
            c = dlms.open_client(port.agent_path, "24", ek=EK, ak=AK, link=link, **opts)
            regs = c.read_registers()
            c.close()
        finally:
            link.close()
    assert {r.obis: r.value for r in regs} == model.registers(T)
    tags = set()
    for _, _d, raw in link.recorder.entries():
        framer = hdlc.Framer()
        framer.receive_data(raw)
        while (f := framer.next_event()) is not None:
            if isinstance(f, hdlc.Frame) and f.kind == hdlc.I and f.info[:2] == b"\xe6\xe6":
                tags.add(f.info[3])
    assert (0xD0 if mode == "dedicated" else 0xDB) in tags   # ded-get / general-glo


@pytest.mark.parametrize("true_ts", [T, ORIGIN + 200 * 86400 + 777])   # summer, winter
def test_clock_with_daylight_saving_deviation(true_ts):
    model = MeterModel(12, seed=7)
    sim = DlmsMeter(model, 25, lambda: true_ts, dst=True)
    want = model.clock(true_ts)         # before the clock is set below
    with bus_of([sim]) as port:
        c = dlms.open_client(port.agent_path, "25", baud=BAUD)
        try:
            clock = c.read_clock()
            rows = c.read_load_profile(true_ts - 3 * HOUR, true_ts)
            c.set_clock(true_ts + 60)
            after = c.read_clock()
        finally:
            c.close()
    assert abs(clock - want) <= 1
    assert c.deviation == (-120 if true_ts == T else -60)
    assert abs(after - (true_ts + 60)) <= 1
    assert [(r.ts, r.values) for r in rows] == model.profile(true_ts - 3 * HOUR, true_ts)


def test_meter_without_multiple_references_is_read_attribute_by_attribute():
    from drivers.dlms import acse

    no_lists = 0x00521F & ~(1 << (23 - acse.CONFORMANCE["multiple-references"]))
    model, sim = _meter(13, 26, conformance=no_lists)
    with bus_of([sim]) as port:
        c = dlms.open_client(port.agent_path, "26", baud=BAUD)
        try:
            regs = c.read_registers()
            rows = c.read_load_profile(T - 2 * HOUR, T)
        finally:
            c.close()
    assert {r.obis: r.value for r in regs} == model.registers(T)
    assert [(r.ts, r.values) for r in rows] == model.profile(T - 2 * HOUR, T)
    assert c.round_trips > 50


def test_remembered_scalers_are_trusted_only_for_the_same_meter_id():
    model, sim = _meter(14, 27)
    memory = {}
    link = Link("", BAUD)
    with bus_of([sim]) as port:
        link.url = port.agent_path
        link.connect()
        try:
            def session():
                tx0 = link.bytes_tx
                c = dlms.open_client(port.agent_path, "27", link=link, metadata=memory)
                regs = {r.obis: r.value for r in c.read_registers()}
                c.read_load_profile(T - HOUR, T)
                c.close()
                return regs, link.bytes_tx - tx0, c.round_trips

            first, sent1, trips1 = session()
            again, sent2, trips2 = session()
            assert first == again == model.registers(T)
            assert sent2 < sent1 - 200 and trips1 == trips2 == 5
            # A different meter at the same address: its id (serial) gives it away.
            key = next(iter(memory))
            memory[key]["id"] = "99999999"
            memory[key]["scalers"]["1.0.32.7.0.255"] = (0, "kV")
            third, _, trips3 = session()
            assert third == model.registers(T) and trips3 == 6
            # Same id, lying memory: the client does trust it (so it is used).
            memory[key]["scalers"]["1.0.32.7.0.255"] = (0, "kV")
            fourth, _, _ = session()
            assert fourth["1.0.32.7.0.255"] == round(model.registers(T)["1.0.32.7.0.255"] * 10)
        finally:
            link.close()


class Babbler:
    """A broken station that answers anything with a long run of noise."""

    address = "30"

    def feed(self, data, now):
        return [(b"\x55" * 20000, None)] if b"\x7e" in data else []


def test_a_babbling_line_still_times_out():
    with bus_of([Babbler()]) as port:
        t0 = time.monotonic()
        with pytest.raises(MeterTimeout):
            dlms.open_client(port.agent_path, "30", baud=BAUD, timeout=0.2, retries=1)
        assert time.monotonic() - t0 < 5.0


def test_invocation_counter_grows_across_sessions_and_a_rewind_is_refused():
    model, sim = _meter(15, 28, ek=EK, ak=AK)
    with bus_of([sim]) as port:
        link = Link(port.agent_path, BAUD).connect()
        try:
            seen = []
            for _ in range(2):
                c = dlms.open_client(port.agent_path, "28", ek=EK, ak=AK, link=link)
                assert {r.obis: r.value for r in c.read_registers()} == model.registers(T)
                c.close()
                seen.append(c.invocation_counter)
            assert seen[1] > seen[0] > 1
            with pytest.raises(MeterRefused):      # a client that forgot its counter
                dlms.open_client(port.agent_path, "28", ek=EK, ak=AK, link=link,
                                 invocation_counter=1, retries=1)
        finally:
            link.close()
