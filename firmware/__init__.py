"""What goes onto a device: the MicroPython entry point and bundle build
(mpy-cross), provisioning of ids, keys and config, flashing (mpremote / SSH)
and signed updates.

Owns device images: the board's agent loop (``firmware.loop``), its flash
archive (``firmware.archive``), the RS-485 port and meter readers on a board
(``firmware.rs485``, ``firmware.meters``), the bundle build
(``firmware.build``) and flashing (``firmware.flash``). Must not know HES
internals. This file is portable (it is on the board's import path).
"""


class FirmwareError(Exception):
    """Root of every error raised by ``firmware``. Structured fields are
    keyword arguments kept as attributes (as ``drivers.DriverError``)."""

    def __init__(self, message="", **fields):
        super().__init__(message)
        self.fields = fields
        for k, v in fields.items():
            setattr(self, k, v)
