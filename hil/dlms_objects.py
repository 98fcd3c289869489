"""The COSEM objects a simulated DLMS meter offers to commands: disconnect
control (class 70), activity calendar (class 20), limiter (class 71).

Owns their state and rules as the Blue Book gives them:
- class 70 (4.5.8): control_state disconnected(0) / connected(1) /
  ready_for_reconnection(2), output_state true only when connected, and the
  control_mode (0..6) deciding which triggers act. remote_disconnect (method
  1) forces 'disconnected' (modes 1-6); remote_reconnect (method 2) forces
  'ready_for_reconnection' where direct remote reconnection is disabled
  (modes 1, 3, 5, 6) and 'connected' where it is enabled (modes 2, 4); the
  customer's button (manual_reconnect) connects from ready_for_reconnection
  (all modes); manual_disconnect in modes 1, 2, 5; local_disconnect (e.g. the
  limiter) in modes 1-6; local_reconnect in modes 5, 6. Mode 0 is always
  connected and refuses the methods. The relay itself is the model's
  (``MeterModel.set_relay``), so every protocol and the energy see it.
- class 20 (4.5.5): the passive calendar (attributes 6..10) is stored as
  written and read back the same; once the meter's clock passes
  activate_passive_calendar_time, or on method 1, it becomes the active one
  (attributes 2..5).
- class 71 (4.5.9): thresholds and durations stored as written (unsigned
  integer types), monitored_value the active power 1.0.1.7.0.255.

Must not know HDLC or sessions (``hil.dlms_meter`` routes services here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drivers import DriverError
from drivers.dlms import cosem
from drivers.dlms.axdr import (
    ARRAY,
    BOOLEAN,
    DOUBLE_LONG_UNSIGNED,
    ENUM,
    INTEGER,
    LONG_UNSIGNED,
    OCTET_STRING,
    STRUCTURE,
    UNSIGNED,
    DateTime,
)
from hil.model import MeterModel

SUCCESS, DENIED, NO_SUCH, TYPE_UNMATCHED = 0, 3, 4, 12
DISCONNECTED, CONNECTED, READY = 0, 1, 2
# trigger -> (modes where it acts, {from state: to state})
TRIGGERS = {
    "remote_disconnect": ({1, 2, 3, 4, 5, 6}, {CONNECTED: DISCONNECTED, READY: DISCONNECTED}),
    "remote_reconnect_ready": ({1, 3, 5, 6}, {DISCONNECTED: READY}),
    "remote_reconnect_direct": ({2, 4}, {DISCONNECTED: CONNECTED, READY: CONNECTED}),
    "manual_reconnect": ({1, 2, 3, 4, 5, 6}, {READY: CONNECTED}),
    "manual_disconnect": ({1, 2, 5}, {CONNECTED: READY}),
    "local_disconnect": ({1, 2, 3, 4, 5, 6}, {CONNECTED: READY}),
    "local_reconnect": ({5, 6}, {READY: CONNECTED}),
}
UNSIGNED_TYPES = (UNSIGNED, LONG_UNSIGNED, DOUBLE_LONG_UNSIGNED)
EMPTY_CALENDAR = {cosem.CALENDAR_NAME_PASSIVE: (OCTET_STRING, b""),
                  cosem.SEASON_PROFILE_PASSIVE: (ARRAY, []),
                  cosem.WEEK_PROFILE_PASSIVE: (ARRAY, []),
                  cosem.DAY_PROFILE_PASSIVE: (ARRAY, []),
                  cosem.ACTIVATE_PASSIVE_TIME: (OCTET_STRING, bytes((0xFF,) * 9 + (0x80, 0, 0xFF)))}


class CommandObjects:
    """``clock()`` gives the true time; ``meter_clock(true)`` the meter's own."""

    classes = (cosem.DISCONNECT_CONTROL, cosem.ACTIVITY_CALENDAR, cosem.LIMITER)

    def __init__(self, model: MeterModel, clock: Callable[[], float],
                 meter_clock: Callable[[float], float], control_mode: int = 4) -> None:
        if not 0 <= control_mode <= 6:
            raise ValueError("control_mode is 0..6")
        self.model, self.clock, self.meter_clock = model, clock, meter_clock
        self.control_mode = control_mode
        self.control_state = CONNECTED if model.relay_connected or control_mode == 0 \
            else DISCONNECTED
        self.passive: dict[int, Any] = dict(EMPTY_CALENDAR)
        self.active: dict[int, Any] = {a - 4: v for a, v in EMPTY_CALENDAR.items()
                                       if a != cosem.ACTIVATE_PASSIVE_TIME}
        self.limiter: dict[int, Any] = {a: (DOUBLE_LONG_UNSIGNED, 0)
                                        for a in cosem.LIMITER_ATTRIBUTES.values()}
        self._activated: bytes = b""

    # -- disconnect control ------------------------------------------------------
    def trigger(self, name: str) -> bool:
        """Apply a trigger; False when the control mode does not allow it (a
        trigger that does not apply to the current state changes nothing)."""
        modes, moves = TRIGGERS[name]
        if self.control_mode not in modes:
            return False
        new = moves.get(self.control_state)
        if new is not None and new != self.control_state:
            self.control_state = new
            self.model.set_relay(new == CONNECTED, self.clock())
        return True

    def press_button(self) -> bool:
        """The customer presses the meter's button (manual reconnection)."""
        return self.trigger("manual_reconnect")

    def _sync(self) -> None:
        """The relay moved under another protocol's command: follow it."""
        on = self.model.relay_connected
        if on != (self.control_state == CONNECTED):
            self.control_state = CONNECTED if on else DISCONNECTED

    # -- services ---------------------------------------------------------------------
    def get(self, class_id: int, obis: str, attr: int) -> Any:
        if class_id == cosem.DISCONNECT_CONTROL and obis == cosem.DISCONNECTOR:
            self._sync()
            return {2: (BOOLEAN, self.control_state == CONNECTED),
                    3: (ENUM, self.control_state),
                    4: (ENUM, self.control_mode)}.get(attr, NO_SUCH)
        if class_id == cosem.ACTIVITY_CALENDAR and obis == cosem.CALENDAR:
            self._activate_due()
            if attr in self.passive:
                return self.passive[attr]
            return self.active.get(attr, NO_SUCH)
        if class_id == cosem.LIMITER and obis == cosem.LIMITER_OBIS:
            if attr == cosem.MONITORED_VALUE:
                return (STRUCTURE, [(LONG_UNSIGNED, cosem.REGISTER),
                                    (OCTET_STRING, cosem.obis_bytes("1.0.1.7.0.255")),
                                    (INTEGER, 2)])
            return self.limiter.get(attr, NO_SUCH)
        return NO_SUCH

    def set(self, class_id: int, obis: str, attr: int, value: Any) -> int:
        if class_id == cosem.ACTIVITY_CALENDAR and obis == cosem.CALENDAR:
            if attr not in self.passive:
                return DENIED                          # the active calendar is read-only
            want = ARRAY if attr in (7, 8, 9) else OCTET_STRING
            if not isinstance(value, tuple) or value[0] != want:
                return TYPE_UNMATCHED
            if attr == cosem.ACTIVATE_PASSIVE_TIME and len(value[1]) != 12:
                return TYPE_UNMATCHED
            self.passive[attr] = value
            return SUCCESS
        if class_id == cosem.LIMITER and obis == cosem.LIMITER_OBIS:
            if attr not in self.limiter:
                return DENIED
            if not isinstance(value, tuple) or value[0] not in UNSIGNED_TYPES:
                return TYPE_UNMATCHED
            self.limiter[attr] = value
            return SUCCESS
        if class_id == cosem.DISCONNECT_CONTROL and obis == cosem.DISCONNECTOR:
            return DENIED              # control_mode is not writable over this association
        return NO_SUCH

    def action(self, class_id: int, obis: str, method: int) -> int:
        if class_id == cosem.DISCONNECT_CONTROL and obis == cosem.DISCONNECTOR:
            self._sync()
            if method == cosem.REMOTE_DISCONNECT:
                return SUCCESS if self.trigger("remote_disconnect") else DENIED
            if method == cosem.REMOTE_RECONNECT:
                ok = self.trigger("remote_reconnect_direct") or \
                    self.trigger("remote_reconnect_ready")
                return SUCCESS if ok else DENIED
            return NO_SUCH
        if class_id == cosem.ACTIVITY_CALENDAR and obis == cosem.CALENDAR and \
                method == cosem.ACTIVATE_PASSIVE_CALENDAR:
            self._activate()
            return SUCCESS
        return NO_SUCH

    # -- the calendar ------------------------------------------------------------------
    def _activate(self) -> None:
        for a in (6, 7, 8, 9):
            self.active[a - 4] = self.passive[a]

    def _activate_due(self) -> None:
        raw = self.passive[cosem.ACTIVATE_PASSIVE_TIME][1]
        try:
            when = DateTime.from_bytes(raw).to_epoch()
        except DriverError:
            return                     # not specified: never by itself
        if raw != self._activated and self.meter_clock(self.clock()) >= when:
            self._activate()
            self._activated = raw           # once per activation time written
