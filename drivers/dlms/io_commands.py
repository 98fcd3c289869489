"""What signed commands need of a DLMS meter beyond reading it: the
disconnector's state (class 70), the passive activity calendar (class 20)
and the limiter (class 71), each written and read back equal.

A mixin of ``drivers.dlms.io.DlmsClient`` (it uses the client's ``_get``,
``_exchange``, ``_guard`` and association); the COSEM encodings are in
``drivers.dlms.cosem``. Must not know why a command was sent. CPython only.
"""

from __future__ import annotations

from typing import Any

from drivers import MeterRefused, RemoteProtocolError
from drivers.dlms import cosem, xdlms
from drivers.dlms.axdr import encode


def _desc(class_id: int, obis: str, attribute: int) -> xdlms.Descriptor:
    return xdlms.Descriptor(class_id, cosem.obis_bytes(obis), attribute)


class CommandObjects:
    deviation: int
    _get: Any
    _guard: Any
    _exchange: Any
    assoc: Any

    def relay_state(self) -> tuple[bool, int]:
        """(output_state, control_state) of the disconnector, class 70 attributes
        2 and 3 (Blue Book 4.5.8; control_state 0 disconnected, 1 connected,
        2 ready_for_reconnection)."""
        def run() -> tuple[bool, int]:
            res = self._get([_desc(cosem.DISCONNECT_CONTROL, cosem.DISCONNECTOR, a)
                             for a in (cosem.OUTPUT_STATE, cosem.CONTROL_STATE)])
            for r in res:
                if isinstance(r, int):
                    raise MeterRefused("disconnect control state refused: %s" % (
                        xdlms.DATA_ACCESS_RESULTS.get(r, r),), code=r)
            out, ctl = res
            if not isinstance(out[1], bool) or not isinstance(ctl[1], int):
                raise RemoteProtocolError("disconnect control state of the wrong types: %r" % (
                    res,))
            return out[1], ctl[1]
        return self._guard(run)  # type: ignore[no-any-return]

    def _set_attribute(self, class_id: int, obis: str, attr: int, data: Any) -> None:
        resp = self._exchange(self.assoc.request(
            xdlms.SetRequest(_desc(class_id, obis, attr), data))).apdu
        if not isinstance(resp, xdlms.SetResponse) or resp.result != 0:
            code = getattr(resp, "result", -1)
            raise MeterRefused("SET of %s attribute %d refused: %s" % (
                obis, attr, xdlms.DATA_ACCESS_RESULTS.get(code, code)), obis=obis,
                attribute=attr, code=code)

    def _write_back(self, class_id: int, obis: str, pairs: list[tuple[int, Any]],
                    names: dict[int, str]) -> list[Any]:
        """SET each (attribute, Data), then GET them all and compare byte for byte."""
        for attr, data in pairs:
            self._set_attribute(class_id, obis, attr, data)
        back = self._get([_desc(class_id, obis, a) for a, _ in pairs])
        for (attr, data), got in zip(pairs, back, strict=True):
            if isinstance(got, int) or encode(got) != encode(data):
                raise RemoteProtocolError("read back differs: %s" % names.get(attr, attr),
                                          obis=obis, attribute=attr)
        return back

    def write_calendar(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Write the passive activity calendar (0.0.13.0.0.255: name, season, week
        and day profiles, activation time) and read it back equal."""
        pairs = cosem.passive_calendar(spec, self.deviation)
        self._guard(self._write_back, cosem.ACTIVITY_CALENDAR, cosem.CALENDAR, pairs,
                    cosem.PASSIVE_NAMES)
        return {"name": spec["name"], "activate": spec["activate"], "read_back": "equal"}

    def write_limiter(self, values: dict[str, int]) -> dict[str, int]:
        """Write limiter 0.0.17.0.0.255 thresholds/durations, read them back equal;
        returns all four as the meter holds them now."""
        pairs = cosem.limiter_values(values)
        names = {a: n for n, a in cosem.LIMITER_ATTRIBUTES.items()}
        self._guard(self._write_back, cosem.LIMITER, cosem.LIMITER_OBIS, pairs, names)
        res = self._guard(self._get, [_desc(cosem.LIMITER, cosem.LIMITER_OBIS, a)
                                      for a in names])
        return {names[a]: r[1] for a, r in zip(names, res, strict=True)
                if not isinstance(r, int)}

