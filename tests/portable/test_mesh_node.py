"""mesh.node.Node through its API on a few nodes: delivery up and down,
acks, ping, back-pressure, bad input counted (never raised), stats, the
LoRa duty budget, the auto gateway role."""

from mesh_harness import KEY, Net, max_hour_airtime

from mesh import MeshBusy, MeshLocalError
from mesh.actions import Delivered, MessageAcked, Transmit
from mesh.node import Node
from mesh.packet import Header
from mesh.secure import MemoryCounterStore


def _raises(fn, cls, reason):
    try:
        fn()
    except cls as e:
        assert e.reason == reason, e.fields
    else:
        raise AssertionError("no %s" % cls.__name__)


def _chain(n=3, **kw):
    names = ["G"] + ["N%d" % i for i in range(1, n)]
    edges = [(names[i], names[i + 1]) for i in range(n - 1)]
    net = Net(names, edges, gateways=["G"], seed=4, **kw)
    net.run(20000)
    return net


def test_construction_errors():
    s = MemoryCounterStore()
    udp = [{"kind": "udp"}]
    _raises(lambda: Node("A", "boss", KEY, udp, s), MeshLocalError, "role")
    _raises(lambda: Node("A", "node", KEY[:16], udp, s), MeshLocalError, "key")
    _raises(lambda: Node("A", "node", KEY, [], s), MeshLocalError, "link")
    _raises(lambda: Node("A", "node", KEY, [{"kind": "ir"}], s), MeshLocalError, "link")
    _raises(lambda: Node("A", "node", KEY, udp, s, bogus=1), MeshLocalError, "option")
    _raises(lambda: Node("", "node", KEY, udp, s), MeshLocalError, "identity")
    lora = {"kind": "lora", "region": "US915"}
    _raises(lambda: Node("A", "node", KEY, [lora], s), MeshLocalError, "link")


def test_link_descriptions_as_configs_write_them():
    from mesh.links import LinkSpec
    a = LinkSpec.from_dict({"kind": "lora", "sf": 8, "bandwidth": 250, "coding_rate": "4/6",
                            "region": "EU868", "spi": {"bus": 0}, "channel": 869525000})
    b = LinkSpec.from_dict({"kind": "lora", "sf": 8, "bandwidth_khz": 250, "coding_rate": 2,
                            "channel": 869525000})
    assert a.describe() == b.describe() and a.bw == 250000 and a.cr == 2 and a.mtu == 222
    u = LinkSpec.from_dict({"kind": "udp", "listen": "0.0.0.0:47800", "peers": ["x:1"]})
    assert u.mtu == 1200 and u.params(0) == {} and not u.duty_cycled


def test_up_down_ping_across_hops():
    net = _chain(4)
    n3, g = net.nodes["N3"], net.nodes["G"]
    st = n3.stats(net.now)
    assert st["gateway"] == "G" and st["parent"] == "N2" and st["routes"][0]["hops"] == 3
    mid = n3.send_up(b"batch" * 300, 1, net.now)
    net.run(net.now + 5000)
    assert [(a.origin, a.payload, a.kind) for _, _, a in net.delivered("G")] == \
        [("N3", b"batch" * 300, "up")]
    assert [a for _, _, a in net.acked("N3")] == [MessageAcked(mid)]
    # the gateway answers down the path the uplink took
    g.send_down("N3", b"ack 1", net.now)
    net.run(net.now + 5000)
    got = net.delivered("N3")
    assert len(got) == 1 and got[0][2] == Delivered("G", b"ack 1", got[0][2].message_id, "down")
    pid = n3.ping("G", net.now)
    net.run(net.now + 5000)
    p = net.pongs("N3")
    assert len(p) == 1 and p[0][2].node == "G" and p[0][2].message_id == pid
    assert 0 < p[0][2].rtt_ms < 1000


def test_api_refusals():
    net = _chain(2)
    n1 = net.nodes["N1"]
    _raises(lambda: n1.send_down("G", b"x", net.now), MeshLocalError, "not_gateway")
    _raises(lambda: n1.send_up(b"x", 4, net.now), MeshLocalError, "priority")
    _raises(lambda: net.nodes["G"].send_down("NOBODY", b"x", net.now), MeshLocalError,
            "no_route")
    _raises(lambda: n1.ping("NOBODY", net.now), MeshLocalError, "no_route")
    _raises(lambda: n1.receive(3, b"", None, None, net.now), MeshLocalError, "link")


def test_back_pressure_keeps_data_with_the_caller():
    net = _chain(2, own_bytes=3000)
    n1 = net.nodes["N1"]
    n1.send_up(b"a" * 2000, 2, net.now)
    _raises(lambda: n1.send_up(b"b" * 2000, 2, net.now), MeshBusy, "queue_full")
    net.run(net.now + 5000)
    n1.send_up(b"b" * 2000, 2, net.now)                  # room again once handed over
    net.run(net.now + 5000)
    assert sorted(a.payload[:1] for _, _, a in net.delivered("G")) == [b"a", b"b"]


def test_bad_input_is_counted_never_raised():
    net = _chain(2)
    n1, g = net.nodes["N1"], net.nodes["G"]
    junk = [b"", b"\x00", b"\xff" * 30, bytes(range(40))]
    for j in junk:
        assert n1.receive(0, j, None, None, net.now) is None
    # a real frame from G, replayed, then altered
    adverts = [a for (_, n, a) in net.sent if n == "G" and isinstance(a, Transmit)]
    frame = adverts[-1].frame
    assert n1.receive(0, frame, None, None, net.now) is None
    bad = bytearray(frame)
    bad[-1] ^= 1
    assert n1.receive(0, bytes(bad), None, None, net.now) is None
    other = Header(0, 0x7, 0x8, origin=1, dest=2).to_bytes() + b"xxxxx"
    assert n1.receive(0, other, None, None, net.now) is None        # for someone else
    ref = n1.stats(net.now)["refused"]
    assert ref["malformed"] >= 3 and ref["replay"] == 1 and ref["bad_tag"] == 1
    assert n1.stats(net.now)["counters"]["overheard"] == 1
    assert g.stats(net.now)["refused"]["bad_tag"] == 0


def test_stats_shape():
    net = _chain(3)
    st = net.nodes["N1"].stats(net.now)
    for k in ("identity", "address", "role", "gateway_active", "gateway", "parent", "backup",
              "cost", "neighbours", "routes", "downward", "queue", "duty", "counters",
              "refused"):
        assert k in st, k
    ids = sorted(nb["id"] for nb in st["neighbours"])
    assert ids == ["G", "N2"]
    nb = st["neighbours"][0]
    for k in ("id", "address", "link", "kind", "quality", "etx", "rssi", "snr", "last_heard_s"):
        assert k in nb, k
    assert st["queue"] == {"frames": 0, "bytes": 0, "own_messages": 0}
    assert net.nodes["G"].stats(net.now)["gateway_active"] is True


def test_lora_defers_on_a_tight_budget():
    # 0.1 % sub-band (868.7-869.2 MHz): 3.6 s of air per hour; SF9 frames of
    # 115 bytes last 0.6 s, so a 900-byte message (10 frames) must wait for budget
    link = {"kind": "lora", "sf": 9, "channel": 868900000}
    net = _chain(2, kind="lora", link=link, message_ttl_ms=5 * 3600000)
    net.run(600000)
    n1 = net.nodes["N1"]
    n1.send_up(b"q" * 900, 1, net.now)
    start = net.now
    net.run(start + 4 * 3600000)
    st = n1.stats(net.now)
    assert st["counters"]["duty_deferrals"] > 0
    assert len(net.delivered("G")) == 1
    tx = [a for (_, n, a) in net.sent if n == "N1"]
    assert all(a.params["sf"] == 9 and a.params["toa_ms"] > 0 for a in tx)
    assert max_hour_airtime(net.sent, "N1") <= 3600
    assert max_hour_airtime(net.sent, "G") <= 3600


def test_auto_gateway_follows_its_uplink():
    net = Net(["A", "B"], [("A", "B")], seed=2)
    a, b = net.nodes["A"], net.nodes["B"]
    a.role = "auto"
    a.set_uplink(True, 200, 10, net.now)
    net.run(30000)
    assert b.stats(net.now)["gateway"] == "A"
    b.send_up(b"hello", 0, net.now)
    net.run(net.now + 3000)
    assert [x.payload for _, _, x in net.delivered("A")] == [b"hello"]
    a.set_uplink(False, 0, 0, net.now)
    net.run(net.now + 30000)
    assert b.stats(net.now)["gateway"] is None


def test_adaptive_sf_per_neighbour():
    from mesh.links import LinkSpec
    spec = LinkSpec.from_dict({"kind": "lora", "sf": 10, "adaptive_sf": True, "min_sf": 7})
    assert spec.sf_for(None) == 10 and spec.sf_for(10.0) == 7 and spec.sf_for(-6.0) == 9
    assert spec.sf_for(-40.0) == 10                   # below every margin: the link's SF
    assert LinkSpec.from_dict({"kind": "lora", "sf": 10}).sf_for(10.0) == 10
    # the harness hears every frame at SNR 5 dB: unicasts at SF7, adverts at SF10
    link = {"kind": "lora", "sf": 10, "channel": 869525000, "adaptive_sf": True}
    net = _chain(2, kind="lora", link=link)
    net.run(900000)
    net.nodes["N1"].send_up(b"z" * 300, 1, net.now)
    net.run(net.now + 600000)
    assert len(net.delivered("G")) == 1
    sfs = set((a.dest == 0xFFF, a.params["sf"]) for (_, _, a) in net.sent)
    assert sfs == {(True, 10), (False, 7)}
    toa = dict(((a.dest == 0xFFF, len(a.frame)), a.params["toa_ms"]) for (_, _, a) in net.sent)
    assert all(v > 0 for v in toa.values())


def test_relayed_fragments_without_a_way_on_expire():
    net = _chain(3, message_ttl_ms=600000)
    g, n1 = net.nodes["G"], net.nodes["N1"]
    net.nodes["N2"].send_up(b"x" * 50, 0, net.now)
    net.run(net.now + 3000)
    g.send_down("N2", b"first", net.now)
    net.run(net.now + 3000)
    assert len(net.delivered("N2")) == 1
    net.kill("N2")
    g.send_down("N2", b"second", net.now)
    net.run(net.now + 60000)
    # N1 took it, N2 stopped acking: the link is dead, the downward route gone
    assert n1.stats(net.now)["queue"]["frames"] == 1
    net.run(net.now + 1800000)
    assert n1.stats(net.now)["queue"]["frames"] == 0     # not held forever
    assert n1.counters["dropped_expired"] == 1


def test_a_message_id_used_again_is_a_new_message():
    # Message ids are 8 bits per origin; relays and the gateway remember the
    # (origin, id, fragment) of what they handled for dedup_ms. An origin that
    # reboots draws a fresh first id (it may be one they remember), and a
    # busy one wraps within that time: either way its new message differs and
    # must get through, not be acked as a duplicate and dropped.
    net = _chain(3)
    net.nodes["N2"].send_up(b"first" * 60, 1, net.now)        # two fragments
    net.run(net.now + 5000)
    first = [a for _, _, a in net.delivered("G")]
    assert [a.payload for a in first] == [b"first" * 60]
    net.restart("N2")
    net.nodes["N2"]._msgid = first[0].message_id   # the reboot drew the same first id
    net.run(net.now + 20000)
    mid = net.nodes["N2"].send_up(b"again" * 60, 1, net.now)
    net.run(net.now + 5000)
    assert [a.payload for _, _, a in net.delivered("G")] == [b"first" * 60, b"again" * 60]
    assert [a for _, _, a in net.acked("N2")][-1] == MessageAcked(mid)
    # a true copy (same id, same bytes: a retransmitted fragment) is still dropped
    g, n1 = net.nodes["G"], net.nodes["N1"]
    dup = g.counters["duplicates"] + n1.counters["duplicates"]
    net.nodes["N2"]._msgid = first[0].message_id
    net.nodes["N2"].send_up(b"again" * 60, 1, net.now)
    net.run(net.now + 5000)
    assert len(net.delivered("G")) == 2
    assert g.counters["duplicates"] + n1.counters["duplicates"] > dup


def test_an_ack_queued_behind_a_dead_relay_goes_when_it_returns():
    # G - N1 - N2 - N3: the HES's answer for N3 is at N1 when N2 dies for 40 s.
    # N3 sends nothing until it gets that answer, so nothing new teaches N1 the
    # way down: N1 keeps the route through N2 and uses it once N2 speaks again.
    net = _chain(4)
    net.nodes["N3"].send_up(b"batch", 1, net.now)
    net.run(net.now + 3000)
    assert len(net.delivered("G")) == 1
    net.kill("N2")
    net.nodes["G"].send_down("N3", b"ack", net.now)
    net.run(net.now + 40000)
    assert not net.delivered("N3")
    net.restart("N2")
    net.run(net.now + 10000)
    assert [a.payload for _, _, a in net.delivered("N3")] == [b"ack"]


def test_a_gateway_gone_silent_is_left_within_the_liveness_bound():
    # no traffic at all: nobody learns of G1's death from unacked frames, and
    # A and B would keep their routes to it (via A) for route_ttl_ms (3 h);
    # G1's seq stops moving, so within route_live_ms (+ one housekeeping
    # sweep) every node that routed to it names G2
    live, house = 40000, 5000
    net = Net(["G1", "G2", "A", "B", "C"],
              [("G1", "A"), ("A", "B"), ("B", "C"), ("C", "G2")], gateways=["G1", "G2"],
              seed=5, gateway_refresh_ms=15000, route_live_ms=live, housekeeping_ms=house,
              seq_hasten_ms=4000)
    net.run(60000)

    def gateways():
        return {n: net.nodes[n].stats(net.now)["gateway"] for n in ("A", "B", "C")}

    assert gateways() == {"A": "G1", "B": "G1", "C": "G2"}
    net.run(net.now + 3 * live)               # G1 alive: its routes never go stale
    assert gateways() == {"A": "G1", "B": "G1", "C": "G2"}
    net.kill("G1")
    killed = net.now
    while net.now - killed < live + 2 * house and "G1" in gateways().values():
        net.run(net.now + 1000)
    assert gateways() == {"A": "G2", "B": "G2", "C": "G2"}, (gateways(), net.now - killed)
    assert net.now - killed <= live + 2 * house
    # G1 restarts (its seq from 0 again) and is taken back
    net.restart("G1")
    net.run(net.now + 30000)
    assert gateways()["A"] == "G1"
