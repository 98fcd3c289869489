"""Python modules the simulated board has built in (copied into the
interpreter's ``/rom``, last on ``sys.path``): ``machine``. They run inside
MicroPython and talk to the Node side (hil/board.mjs) through ``_board``."""
