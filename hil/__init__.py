"""Hardware-in-the-loop: meter simulators that serve on any serial URL (a
pseudo-terminal pair in tests, a USB-RS485 adapter on a rig), fault injection,
radio-medium and district simulators, rig scenarios.

May use every other package; nothing but tests and bench imports it.
"""


class HilError(Exception):
    """Root of every error raised by ``hil``."""
