"""Bit-level entropy coding for the batch codec: a bit writer/reader, zigzag,
Elias-gamma, Rice codes with an escape, and the per-column choice between a
Rice code and a fixed-width frame of reference.

Portable (CPython and MicroPython), plain integers only. Owns no format
decisions beyond the codes themselves; ``agent.batch`` lays the fields out.
Any malformed input raises ``BatchError`` (reason ``truncated`` or
``bad_value``), never another exception, and no code reads more than a bounded
number of bits per value.
"""

from agent import AgentError

RICE_ESCAPE = 24        # unary quotient >= this: an escaped raw value follows
MAX_BITS = 4096         # no single value is wider than this (arbitrary-size ints)
BATCH_REASONS = ("truncated", "bad_version", "bad_length", "bad_value", "base_mismatch")


class BatchError(AgentError):
    """A batch could not be decoded (or encoded). ``reason`` is one of
    ``BATCH_REASONS``; ``base_mismatch`` means the batch is a delta against a
    state this end does not hold (the agent must send a keyframe)."""

    def __init__(self, reason: str, message: str = "", **fields: object) -> None:
        super().__init__("batch: %s %s" % (reason, message), reason=reason, **fields)


def zigzag(n: int) -> int:
    return 2 * n if n >= 0 else -2 * n - 1


def unzigzag(z: int) -> int:
    return z >> 1 if not z & 1 else -((z + 1) >> 1)


def bit_length(n: int) -> int:
    """Bits needed for ``n`` >= 0. ``int.bit_length`` where the port has it (the
    codec state's limits are 4000-bit numbers: a bit-by-bit loop there is
    quadratic), else by 32-bit steps then bits."""
    try:
        return n.bit_length()
    except AttributeError:
        b = 0
        while n >> (b + 32):
            b += 32
        while n >> b:
            b += 1
        return b


class BitWriter:
    __slots__ = ("_acc", "_n", "_out")

    def __init__(self) -> None:
        self._acc = 0
        self._n = 0
        self._out = bytearray()

    def bits(self, value: int, n: int) -> None:
        if n <= 0:
            return
        self._acc = (self._acc << n) | (value & ((1 << n) - 1))
        self._n += n
        while self._n >= 8:
            self._n -= 8
            self._out.append((self._acc >> self._n) & 0xFF)
        self._acc &= (1 << self._n) - 1

    def unary(self, q: int) -> None:
        while q >= 16:
            self.bits(0xFFFF, 16)
            q -= 16
        self.bits(((1 << q) - 1) << 1, q + 1)    # q ones then a zero

    def gamma(self, n: int) -> None:
        """Elias-gamma of n >= 1."""
        b = bit_length(n)
        self.bits(0, b - 1)
        self.bits(n, b)

    def count(self, n: int) -> None:
        """A non-negative count (gamma of n + 1)."""
        self.gamma(n + 1)

    def rice(self, z: int, k: int) -> None:
        q = z >> k
        if q >= RICE_ESCAPE:
            self.bits((1 << RICE_ESCAPE) - 1, RICE_ESCAPE)    # ones, no terminating zero
            b = bit_length(z)
            self.count(b)
            self.bits(z, b)
        else:
            self.unary(q)
            self.bits(z, k)

    def raw(self, data: bytes) -> None:
        for b in data:
            self.bits(b, 8)

    def getvalue(self) -> bytes:
        if self._n:
            return bytes(self._out) + bytes(((self._acc << (8 - self._n)) & 0xFF,))
        return bytes(self._out)


def rice_cost(z: int, k: int) -> int:
    q = z >> k
    if q >= RICE_ESCAPE:
        b = bit_length(z)
        return RICE_ESCAPE + 2 * bit_length(b + 1) - 1 + b
    return q + 1 + k


class BitReader:
    __slots__ = ("_data", "_pos", "_end")

    def __init__(self, data: bytes, start_byte: int = 0) -> None:
        self._data = data
        self._pos = 8 * start_byte
        self._end = 8 * len(data)

    def bits(self, n: int) -> int:
        if n <= 0:
            return 0
        if self._pos + n > self._end:
            raise BatchError("truncated", "bit stream ends early")
        v = 0
        pos = self._pos
        data = self._data
        while n:
            byte = data[pos >> 3]
            avail = 8 - (pos & 7)
            take = avail if avail < n else n
            v = (v << take) | ((byte >> (avail - take)) & ((1 << take) - 1))
            pos += take
            n -= take
        self._pos = pos
        return v

    def bit(self) -> int:
        return self.bits(1)

    def unary(self, limit: int) -> int:
        q = 0
        while self.bits(1):
            q += 1
            if q >= limit:
                return q
        return q

    def gamma(self, limit: int = 64) -> int:
        z = 0
        while not self.bits(1):
            z += 1
            if z > limit:
                raise BatchError("bad_value", "gamma code too long")
        return (1 << z) | self.bits(z)

    def count(self, limit: int = 1 << 24) -> int:
        n = self.gamma(bit_length(limit + 1)) - 1
        if n > limit:
            raise BatchError("bad_value", "count %d over limit %d" % (n, limit))
        return n

    def rice(self, k: int) -> int:
        q = self.unary(RICE_ESCAPE)
        if q >= RICE_ESCAPE:
            return self.bits(self.count(MAX_BITS))
        return (q << k) | self.bits(k)

    def raw(self, n: int) -> bytes:
        if self._pos + 8 * n > self._end:
            raise BatchError("truncated", "bytes end early")
        return bytes(self.bits(8) for _ in range(n))

    def remaining(self) -> int:
        return self._end - self._pos


# -- a column of integers: Rice(k) or fixed width from a minimum --------------
# Column header: 1 bit sign (1 = values are zigzagged because some are negative),
# 1 bit method (0 = Rice, 1 = frame of reference); Rice: 5 bits k, then each
# value; FOR: count(minimum), 6 bits width w (63 = escape: count(w) follows),
# then each value as w bits above the minimum.

def _gamma_cost(n: int) -> int:
    return 2 * bit_length(n) - 1


def _best_rice(zs: "list[int]") -> "tuple[int, int]":
    best_k, best = 0, -1
    guess = bit_length(sum(zs) // len(zs))
    for k in range(max(0, guess - 3), min(31, guess + 2) + 1):
        c = 0
        for z in zs:
            c += rice_cost(z, k)
        if best < 0 or c < best:
            best_k, best = k, c
    return best_k, best


def _plan(zs: "list[int]") -> "tuple[int, int, int]":
    """-> (bits, method, parameter) for non-negative ints."""
    k, rice = _best_rice(zs)
    lo = min(zs)
    width = bit_length(max(zs) - lo)
    fixed = _gamma_cost(lo + 1) + 6 + (_gamma_cost(width + 1) if width >= 63 else 0) \
        + width * len(zs)
    if fixed < rice + 5:
        return fixed + 2, 1, width
    return rice + 7, 0, k


def column_cost(values: "list[int]") -> int:
    """Exact bits ``write_column`` spends on these values."""
    if not values:
        return 0
    if min(values) < 0:
        return _plan([zigzag(v) for v in values])[0]
    return _plan(values)[0]


def write_column(w: BitWriter, values: "list[int]") -> None:
    """Signed ints; their count is known to the reader. Picks the cheaper code."""
    if not values:
        return
    signed = min(values) < 0
    zs = [zigzag(v) for v in values] if signed else values
    _, method, p = _plan(zs)
    w.bits(1 if signed else 0, 1)
    w.bits(method, 1)
    if method:
        lo = min(zs)
        w.count(lo)
        if p >= 63:
            w.bits(63, 6)
            w.count(p)
        else:
            w.bits(p, 6)
        for z in zs:
            w.bits(z - lo, p)
    else:
        w.bits(p, 5)
        for z in zs:
            w.rice(z, p)


def read_column(r: BitReader, n: int) -> "list[int]":
    if n <= 0:
        return []
    signed, fixed, p, lo = column_head(r)
    zs = _read_fixed(r, n, p, lo) if fixed else _read_rice(r, n, p)
    return [z >> 1 if not z & 1 else -((z + 1) >> 1) for z in zs] if signed else zs


def column_head(r: BitReader) -> "tuple[int, int, int, int]":
    """A column's header: (signed, fixed-width?, width or Rice k, minimum)."""
    signed = r.bit()
    if r.bit():
        lo = r.count(1 << 62)
        width = r.bits(6)
        if width == 63:
            width = r.count(MAX_BITS)
        return signed, 1, width, lo
    return signed, 0, r.bits(5), 0


def _read_fixed(r: BitReader, n: int, width: int, lo: int) -> "list[int]":
    """``n`` values of ``width`` bits (plus ``lo``): the bytes they span as
    one integer, then shifts (a column at a time, not a value at a time)."""
    if width == 0:
        return [lo] * n
    if n * width > 1 << 16:     # shifts cost the chunk's size: wide columns go value by value
        return [lo + r.bits(width) for _ in range(n)]
    pos = r._pos
    end = pos + n * width
    if end > r._end:
        raise BatchError("truncated", "bit stream ends early")
    b0, b1 = pos >> 3, (end + 7) >> 3
    chunk = int.from_bytes(r._data[b0:b1], "big")
    shift = (b1 << 3) - pos
    mask = (1 << width) - 1
    out = []
    for _ in range(n):
        shift -= width
        out.append(lo + ((chunk >> shift) & mask))
    r._pos = end
    return out


# leading one bits of a byte (for unary codes)
_ONES = bytes(8 - bit_length(~b & 0xFF) for b in range(256))


def _read_rice(r: BitReader, n: int, k: int) -> "list[int]":
    """``n`` Rice(k) codes as ``BitReader.rice`` reads them, byte-wise."""
    data, pos, end = r._data, r._pos, r._end
    ones = _ONES
    out = []
    for _ in range(n):
        # the unary quotient: ones up to a zero, at most RICE_ESCAPE of them
        q = 0
        while True:
            if pos >= end:
                raise BatchError("truncated", "bit stream ends early")
            off = pos & 7
            run = ones[(data[pos >> 3] << off) & 0xFF]   # never more than avail:
            avail = 8 - off                               # the shift brings in zeros
            if q + run >= RICE_ESCAPE:
                pos += RICE_ESCAPE - q
                q = RICE_ESCAPE
                break
            q += run
            if run < avail:
                pos += run + 1          # the ones and the terminating zero
                break
            pos += run
        if q >= RICE_ESCAPE:
            r._pos = pos
            out.append(r.bits(r.count(MAX_BITS)))
            pos = r._pos
            continue
        if k:
            stop = pos + k
            if stop > end:
                raise BatchError("truncated", "bit stream ends early")
            b0, b1 = pos >> 3, (stop + 7) >> 3
            v = int.from_bytes(data[b0:b1], "big") >> ((b1 << 3) - stop)
            out.append((q << k) | (v & ((1 << k) - 1)))
            pos = stop
        else:
            out.append(q)
    r._pos = pos
    return out
