"""mesh.routing and mesh.downward: the advert codec, link ETX, parent and
backup choice, loop-free feasibility, failover when acks stop, retraction
and sequence requests; downward routes learnt from uplink traffic."""

from mesh import MeshLocalError, MeshProtocolError
from mesh.downward import DownwardRoutes
from mesh.routing import (
    ADVERT_LEN,
    COST_SCALE,
    FAIL_LIMIT,
    FLAG_REQ,
    INFINITE,
    NONE,
    Advert,
    Link,
    RouteTable,
    budget_penalty,
    gateway_cost,
    pack_adverts,
    seq_newer,
    unpack_adverts,
)


def test_advert_codec_round_trip_and_errors():
    a = Advert(0x123, 7, 200, 10, 300, 2, 255, 0x045, FLAG_REQ)
    raw = a.to_bytes()
    assert len(raw) == ADVERT_LEN
    assert Advert.from_bytes(raw) == a
    assert unpack_adverts(pack_adverts([a, a])) == [a, a]
    for bad in (raw[:-1], bytes([0x21]) + raw[1:], bytes([0x12]) + raw[1:],
                raw[:1] + b"\xff\xff" + raw[3:]):
        try:
            Advert.from_bytes(bad)
        except MeshProtocolError as e:
            assert e.reason.startswith("advert_")
        else:
            raise AssertionError("accepted %r" % bad)
    try:
        unpack_adverts(b"")
    except MeshProtocolError:
        pass
    else:
        raise AssertionError("empty advert frame accepted")


def test_seq_and_costs():
    assert seq_newer(1, 0) and seq_newer(0, 0xFFFF) and not seq_newer(0, 1)
    assert gateway_cost(255, 0) == 0 and gateway_cost(0, 255) == 510
    assert budget_penalty(255) == 0 and budget_penalty(0) == 512
    link = Link(0, prr=256)
    assert link.cost() == COST_SCALE
    for _ in range(FAIL_LIMIT):
        link.on_tx(False, 0)
    assert link.dead() and link.cost() > COST_SCALE
    link.on_heard(1)
    assert not link.dead()


def _gw_advert(gw, seq=1, uplink=255, load=0):
    return Advert(gw, seq, uplink, load, gateway_cost(uplink, load), 0, 255)


def test_parent_backup_and_failover():
    me = RouteTable(10, 0)
    assert me.best() is None and me.parent() is None
    # G1 (1) heard directly; relay 5 offers G2 (2) one hop further
    assert me.hear(1, _gw_advert(1), 0)
    me.hear(5, Advert(2, 1, 255, 0, 160, 1, 255, 2), 0)
    assert me.best()[:2] == (1, 1)
    assert me.backup() == 5
    assert me.next_hop(2) == 5 and me.next_hop(1) == 1
    # G1 stops acking: after FAIL_LIMIT losses the backup carries the traffic
    changed = False
    for _ in range(FAIL_LIMIT):
        changed = me.tx_result(1, False, 10) or changed
    assert changed
    assert me.best()[:2] == (2, 5) and me.next_hop(1) == 5
    # G1 is retracted, with a request for a newer seq that stays until answered
    ads = me.adverts()
    assert [a for a in ads if a.gateway == 1 and a.cost == INFINITE and a.flags & FLAG_REQ]
    assert [a for a in me.adverts() if a.gateway == 1 and a.flags & FLAG_REQ]
    me.hear(5, Advert(1, 2, 255, 0, 400, 2, 255, 1), 20)
    assert me.next_hop(1) == 5
    assert not [a for a in me.adverts() if a.gateway == 1 and a.cost == INFINITE]


def test_no_route_through_a_child_and_feasibility():
    me = RouteTable(10, 0)
    me.hear(1, _gw_advert(1, seq=4), 0)
    cost_direct = me.best()[2]
    # neighbour 7 routes to G1 through us: never usable
    me.hear(7, Advert(1, 4, 255, 0, 50, 2, 255, 10), 0)
    assert me.best()[1] == 1
    # G1 dies; 8's route at the same seq costs more than we had: infeasible
    # (could be through us), so we retract and request a new seq
    me.hear(8, Advert(1, 4, 255, 0, cost_direct + 500, 3, 255, 9), 0)
    for _ in range(FAIL_LIMIT):
        me.tx_result(1, False, 5)
    assert me.best() is None
    ads = me.adverts()
    assert any(a.flags & FLAG_REQ for a in ads)
    # the gateway answers with a newer seq through 8: feasible again
    me.hear(8, Advert(1, 5, 255, 0, cost_direct + 500, 3, 255, 9), 6)
    assert me.best()[1] == 8


def test_requests_travel_up_not_sideways():
    me = RouteTable(10, 0)
    me.hear(1, _gw_advert(1, seq=4), 0)
    # sibling 7 (its parent is G1, not us) asks for a new seq: not ours to pass on
    assert not me.hear(7, Advert(1, 4, 255, 0, 300, 2, 255, 1, FLAG_REQ), 0)
    assert not [a for a in me.adverts() if a.flags & FLAG_REQ]
    # child 8 (its parent is us) asks: passed up, once per seq
    assert me.hear(8, Advert(1, 4, 255, 0, 400, 3, 255, 10, FLAG_REQ), 0)
    assert [a for a in me.adverts() if a.flags & FLAG_REQ]
    assert not me.hear(8, Advert(1, 4, 255, 0, 400, 3, 255, 10, FLAG_REQ), 1)
    # a neighbour left without a route (a retraction) is helped by anyone
    other = RouteTable(11, 0)
    other.hear(1, _gw_advert(1, seq=4), 0)
    assert other.hear(9, Advert(1, 4, 0, 255, INFINITE, 16, 255, NONE, FLAG_REQ), 0)
    assert [a for a in other.adverts() if a.flags & FLAG_REQ]
    # a neighbour holding a newer seq answers instead (resets its trickle)
    assert me.hear(1, _gw_advert(1, seq=5), 2) is not None
    assert me.hear(7, Advert(1, 4, 255, 0, 300, 2, 255, 1, FLAG_REQ), 3)


class _Counting(RouteTable):
    def __init__(self, *a):
        RouteTable.__init__(self, *a)
        self.choices = 0

    def _select_all(self):
        self.choices += 1
        return RouteTable._select_all(self)


def test_routes_rechosen_only_when_an_input_moved():
    me = _Counting(10, 0)
    adv = _gw_advert(1, seq=4)
    assert me.hear_frame(1, [adv], 0)
    assert me.choices == 1
    assert not me.hear_frame(1, [_gw_advert(1, seq=4)], 10)   # the same again: nothing to do
    assert me.choices == 1
    me.hear_frame(5, [Advert(1, 4, 255, 0, 200, 1, 255, 1)], 20)  # a new entry
    assert me.choices == 2
    me.tx_result(1, True, 30)              # ETX nudged below the reselect threshold,
    me.hear_frame(1, [Advert(1, 4, 255, 0, 0, 0, 200)], 40)  # a busy gateway's budget byte:
    assert me.choices == 2                 # neither re-chooses
    me.hear_frame(1, [Advert(1, 4, 255, 0, 0, 0, 40)], 45)   # budget low enough to cost
    assert me.choices == 3
    for _ in range(FAIL_LIMIT):
        me.tx_result(1, False, 50)
    assert me.best()[1] == 5               # dead: the other neighbour carries it
    n = me.choices
    me.hear_frame(1, [Advert(1, 4, 255, 0, 0, 0, 40)], 60)   # the same advert, but heard
    assert me.choices == n + 1             # again: alive again, so routes are re-chosen


def test_gateway_answers_requests_with_a_new_seq():
    gw = RouteTable(1, 0, gateway=True, uplink=200, load=20)
    assert gw.best() == (1, None, gateway_cost(200, 20))
    assert gw.adverts()[0].seq == 0
    assert gw.hear(3, Advert(1, 0, 0, 255, INFINITE, 16, 255, NONE, FLAG_REQ), 0)
    assert gw.adverts()[0].seq == 1


def test_gateway_speaks_up_for_a_neighbour_with_a_stale_seq():
    # a node that missed the gateway's newer seq asks with the old one, or
    # retracts: the gateway must advertise soon (found by the capacity search:
    # taking it as consistent kept a gateway silent while every route died)
    gw = RouteTable(1, 0, gateway=True, uplink=200, load=20)
    assert gw.hear(3, Advert(1, 0, 0, 255, INFINITE, 16, 255, NONE, FLAG_REQ), 0)
    assert gw.adverts()[0].seq == 1
    assert gw.hear(4, Advert(1, 0, 0, 255, INFINITE, 16, 255, NONE, FLAG_REQ), 1)
    assert gw.adverts()[0].seq == 1              # ours is already newer: no new seq
    assert gw.hear(5, Advert(1, 0, 200, 20, 300, 2, 255, 1), 2)        # an older seq
    assert not gw.hear(5, Advert(1, 1, 200, 20, 300, 2, 255, 1), 3)    # ours: consistent
    assert gw.adverts()[0].seq == 1


def test_stale_routes_expire():
    me = RouteTable(10, 0, route_ttl_ms=1000, neighbour_ttl_ms=1000)
    me.hear(1, _gw_advert(1), 0)
    assert not me.expire(900)
    assert me.expire(1500)
    assert me.best() is None


def test_downward_routes():
    d = DownwardRoutes(ttl_ms=1000, capacity=2)
    d.learn(100, 5, 0)
    d.learn(101, 6, 10)
    assert d.next_hop(100, 20) == 5
    d.learn(100, 7, 30)                      # refreshed through another relay
    d.learn(102, 5, 40)                      # capacity: the stalest (101) gives way
    assert d.evicted == 1 and sorted(d.origins()) == [100, 102]
    try:
        d.next_hop(101, 40)
    except MeshLocalError as e:
        assert e.reason == "no_route"
    else:
        raise AssertionError("evicted route still used")
    assert d.forget_via(5) == 1 and d.origins() == [100]
    try:
        d.next_hop(100, 2000)
    except MeshLocalError:
        assert len(d) == 0
    else:
        raise AssertionError("expired route still used")


def test_a_gateway_bumps_its_seq_every_refresh_period():
    gw = RouteTable(1, 0, gateway=True, refresh_ms=1000)
    assert not gw.refresh(999) and gw.seq == 0
    assert gw.refresh(1000) and gw.seq == 1 and gw.news
    assert not gw.refresh(1999) and gw.refresh(2000) and gw.seq == 2
    assert not RouteTable(2, 0, refresh_ms=1000).refresh(5000)     # a node makes no seqs


def test_a_route_whose_seq_stopped_moving_dies_and_stays_dead():
    # the liveness bound: only a gateway makes seqs, so a route whose seq has
    # not moved for live_ms has no live gateway behind it, whatever relays say
    me = RouteTable(10, 0, live_ms=1000)
    me.hear(5, Advert(1, 7, 255, 0, 300, 2, 255, 4), 0)      # G1 via relay 5
    me.hear(6, Advert(2, 3, 255, 0, 500, 3, 255, 8), 0)      # G2 via relay 6
    assert me.best()[:2] == (1, 5)
    me.hear(6, Advert(2, 4, 255, 0, 500, 3, 255, 8), 600)    # G2's seq moves on, G1's not
    assert not me.expire(1000)
    me.hear(5, Advert(1, 7, 255, 0, 300, 2, 255, 4), 1100)   # relay 5 repeats a ghost
    assert me.expire(1002)                    # seq 7 came at 0: 1002 ms > live_ms
    assert me.best()[:2] == (2, 6)
    assert [a for a in me.adverts() if a.gateway == 1 and a.cost == INFINITE]
    # the ghost repeated at the dead seq, even cheaper, cannot revive the route
    me.hear(5, Advert(1, 7, 255, 0, 100, 1, 255, 4), 1200)
    assert me.best()[:2] == (2, 6) and me.next_hop(1) == 6
    # G2's seq kept moving: its route lives on
    assert not me.expire(1600) and me.best()[:2] == (2, 6)
    # a newer seq from G1 (it is back) is a route again
    me.hear(5, Advert(1, 8, 255, 0, 300, 2, 255, 4), 1700)
    assert me.best()[:2] == (1, 5)


def test_a_restarted_gateway_is_asked_past_the_tombstone():
    me = RouteTable(10, 0, live_ms=1000)
    me.hear(1, _gw_advert(1, seq=40), 0)
    assert me.expire(1500) and me.best() is None
    # G1 restarts counting from 0: older than the tombstone, so we ask for newer
    assert me.hear(1, _gw_advert(1, seq=0), 2000)
    req = [a for a in me.adverts() if a.gateway == 1 and a.flags & FLAG_REQ]
    assert req and req[0].seq == 40
    gw = RouteTable(1, 2000, gateway=True)
    assert gw.hear(10, req[0], 2000) and gw.seq == 41           # it jumps past it
    assert me.hear(1, gw.adverts()[0], 2100) is not None
    assert me.best()[:2] == (1, 1)
    # a gateway hearing a route to itself with a seq from before its restart jumps too
    gw2 = RouteTable(2, 0, gateway=True)
    assert gw2.hear(10, Advert(2, 9, 255, 0, 300, 2, 255, 4), 0) and gw2.seq == 10


def test_seq_news_and_liveness_from_any_neighbour():
    me = RouteTable(10, 0, live_ms=1000)
    me.hear(5, Advert(1, 7, 255, 0, 300, 2, 255, 4), 0)
    assert me.news                              # a new seq taken: pass it on
    me.news = False
    me.hear(6, Advert(1, 6, 255, 0, 300, 2, 255, 4), 10)   # 6 is behind on G1's seq:
    assert me.news                                          # not consistent, news
    # a newer seq heard via a neighbour that is not our parent (ours is quiet,
    # trickle-suppressed) still proves G1 lived lately
    me.hear(6, Advert(1, 8, 255, 0, 900, 4, 255, 4), 600)
    assert me.best()[:2] == (1, 5)
    assert not me.expire(1500) and me.best()[:2] == (1, 5)
    assert me.expire(1601) and me.best() is None            # 1000 ms after seq 8
