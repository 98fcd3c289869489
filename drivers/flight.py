"""A flight recorder: the last N raw frames of a port, with direction and a
monotonic time, to attach to any protocol error. Portable.
"""


class FlightRecorder:
    def __init__(self, size=64):
        self.size = size
        self._buf = []

    def record(self, direction, data, t):
        """direction: 'tx' or 'rx'; t: monotonic seconds."""
        self._buf.append((t, direction, bytes(data)))
        if len(self._buf) > self.size:
            del self._buf[0:len(self._buf) - self.size]

    def entries(self):
        return list(self._buf)

    def dump(self):
        """Lines ``+12.345 rx 7ea0...`` relative to the first entry."""
        if not self._buf:
            return []
        t0 = self._buf[0][0]
        return ["%+.3f %s %s" % (t - t0, d, b.hex()) for t, d, b in self._buf]

    def as_json(self):
        return [{"t": t, "dir": d, "hex": b.hex()} for t, d, b in self._buf]

    def clear(self):
        self._buf = []
