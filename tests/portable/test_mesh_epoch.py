"""The epoch on the air (docs/mesh.md §3.2): data-like frames are always
short (12-byte header), the epoch travels in ACK and ADVERT only, and after
a sender or a receiver restarts data flows again, short, within a bound;
a dead neighbour cannot make a node chatter sync adverts."""

from mesh_harness import Net

from mesh.packet import ACK, ADVERT, DATA_LIKE, Header

LORA = {"kind": "lora", "sf": 7, "channel": 869525000}      # 10 % sub-band
MINUTE = 60000


def _lora_chain(loss=0.1):
    net = Net(["G", "N1", "N2"], [("G", "N1"), ("N1", "N2")], gateways=["G"], kind="lora",
              loss=loss, seed=3, link=LORA)
    net.run(20 * MINUTE)
    assert net.nodes["N2"].stats(net.now)["gateway"] == "G"
    return net


def _check_headers(net):
    """Every frame sent: data-like ones short (12 bytes, no L), ACK and
    ADVERT long; returns how many data-like frames there were."""
    n = 0
    for _, _, a in net.sent:
        h, hlen = Header.from_bytes(a.frame)       # refuses L on a data-like frame
        if h.ptype in DATA_LIKE:
            assert hlen == 12 and not a.frame[0] & 0x10 and h.epoch is None, h
            n += 1
        else:
            assert h.ptype in (ACK, ADVERT) and a.frame[0] & 0x10, h
    return n


def _deliver(net, sender, payload, within_ms):
    """``sender`` sends ``payload`` up now; the time G got it (ms after)."""
    start = net.now
    before = len(net.delivered("G"))
    net.nodes[sender].send_up(payload, 1, net.now)
    while net.now - start < within_ms:
        net.run(net.now + 5000)
        got = net.delivered("G")[before:]
        if got:
            assert [d.payload for _, _, d in got] == [payload]
            return got[0][0] - start
    raise AssertionError("%s: not delivered within %d ms" % (sender, within_ms))


def test_steady_traffic_uses_short_data_frames_only():
    net = _lora_chain()
    for i in range(6):
        _deliver(net, "N2", b"batch %d " % i * 40, 10 * MINUTE)
    assert _check_headers(net) > 10
    assert sum(net.nodes[n].refused["unsynced"] for n in net.names) == 0


def test_after_a_sender_restart_data_flows_short_within_a_bound():
    # N2 restarts (new epoch): it tells it in an advert before its first data
    # frame, so N1 verifies the short frames under the new epoch
    net = _lora_chain()
    _deliver(net, "N2", b"before" * 30, 10 * MINUTE)
    net.kill("N2")
    net.run(net.now + 5 * MINUTE)
    net.restart("N2")
    net.run(net.now + 3 * MINUTE)                   # it hears a route again
    assert _deliver(net, "N2", b"after" * 30, 2 * MINUTE) < 2 * MINUTE
    _check_headers(net)
    assert net.nodes["N2"].sec.epoch == 2


def test_after_a_receiver_restart_data_flows_short_within_a_bound():
    # N1 (N2's parent) restarts and forgets N2's epoch; hearing N1's new epoch
    # N2 sends a sync advert, so N1 can verify N2's short frames again
    net = _lora_chain()
    _deliver(net, "N2", b"before" * 30, 10 * MINUTE)
    net.kill("N1")
    net.run(net.now + 5 * MINUTE)
    net.restart("N1")
    assert _deliver(net, "N2", b"after" * 30, 3 * MINUTE) < 3 * MINUTE
    _check_headers(net)
    assert net.nodes["N2"].counters["sync_adverts"] >= 1


def test_a_dead_neighbour_asks_for_one_sync_advert_at_most():
    net = _lora_chain(loss=0.0)
    n2 = net.nodes["N2"]
    net.kill("N1")
    before = n2.counters["sync_adverts"]
    n2.send_up(b"into the void", 1, net.now)
    net.run(net.now + 60 * MINUTE)
    assert n2.counters["ack_timeouts"] >= 4
    assert n2.counters["sync_adverts"] - before <= 1
