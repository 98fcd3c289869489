"""Arguments of each command op (agent/command_args.py), as both ends check
them: valid ones normalised, invalid ones named. Portable."""

from agent.command_args import ArgsError, check_args

TARIFF = {"name": "TOU-2026", "activate": 1782864000,
          "seasons": [{"name": "all", "start": "01-01", "week": "w"}],
          "weeks": [{"name": "w", "days": [1, 1, 1, 1, 1, 2, 2]}],
          "days": [{"id": 1, "actions": [{"start": "00:00", "tariff": 2},
                                         {"start": "07:00", "tariff": 1},
                                         {"start": "23:00:00", "tariff": 2}]},
                   {"id": 2, "actions": [{"start": "00:00", "tariff": 2}]}]}


def _field(op, args):
    try:
        check_args(op, args)
    except ArgsError as e:
        return e.field
    raise AssertionError("accepted %s %r" % (op, args))


def test_empty_ops():
    for op in ("disconnect", "reconnect", "time"):
        assert check_args(op, {}) == {}
        assert _field(op, {"x": 1}) == "x"


def test_tariff_normalised():
    out = check_args("tariff", TARIFF)
    assert out["days"][0]["actions"][0] == {"start": "00:00:00", "tariff": 2}
    assert out["seasons"] == [{"name": "all", "start": "01-01", "week": "w"}]
    assert out["weeks"][0]["days"] == [1, 1, 1, 1, 1, 2, 2]


def test_tariff_errors_name_the_field():
    bad = dict(TARIFF)
    bad["weeks"] = [{"name": "w", "days": [1, 1, 1, 1, 1, 2, 9]}]
    assert _field("tariff", bad) == "weeks[0].days[6]"
    bad = dict(TARIFF)
    bad["seasons"] = [{"name": "all", "start": "13-01", "week": "w"}]
    assert _field("tariff", bad) == "seasons[0].start"
    bad = dict(TARIFF)
    bad["days"] = [{"id": 1, "actions": [{"start": "07:00", "tariff": 1},
                                         {"start": "06:00", "tariff": 2}]},
                   {"id": 2, "actions": [{"start": "00:00", "tariff": 2}]}]
    assert _field("tariff", bad) == "days[0].actions"
    assert _field("tariff", {"name": "x"}) == "activate"


def test_limit_read_config():
    assert check_args("limit", {"threshold_normal": 5000}) == {"threshold_normal": 5000}
    assert _field("limit", {}) == ""
    assert _field("limit", {"threshold_normal": -1}) == "threshold_normal"
    assert check_args("read", {"registers": ["01.0.1.8.0.255"]}) == {
        "registers": ["1.0.1.8.0.255"]}
    assert _field("read", {"profile": {"from": 10, "to": 5}}) == "profile.to"
    assert _field("config", {"uplink": {}}) == "uplink"
    assert check_args("config", {"retention": {"days": 40}}) == {"retention": {"days": 40}}
    assert _field("explode", {}) == "op"
