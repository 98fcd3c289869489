"""OBIS codes (IEC 62056-61): the common vocabulary of every reading.

Portable (CPython and MicroPython). Owns parsing and formatting of the six
value groups A-B:C.D.E*F; must not know any protocol.
"""


class ObisError(ValueError):
    pass


class Obis:
    """An OBIS code, six value groups 0..255. Immutable and hashable.

    Written as six dotted decimals (``1.0.1.8.0.255``); ``parse`` also accepts
    the IEC form ``1-0:1.8.0*255`` and the short ``1.8.0`` (A=1, B=0, F=255).
    """

    __slots__ = ("_g",)

    def __init__(self, a: int, b: int, c: int, d: int, e: int, f: int = 255) -> None:
        g = (a, b, c, d, e, f)
        for v in g:
            if not isinstance(v, int) or v < 0 or v > 255:
                raise ObisError("OBIS group out of range: %r" % (g,))
        self._g = g

    @classmethod
    def parse(cls, text: str) -> "Obis":
        s = text.strip()
        for sep in ("-", ":", "*"):
            s = s.replace(sep, ".")
        parts = [p for p in s.split(".") if p != ""]
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise ObisError("not an OBIS code: %r" % text) from None
        if len(nums) == 6:
            return cls(nums[0], nums[1], nums[2], nums[3], nums[4], nums[5])
        if len(nums) == 5:
            return cls(nums[0], nums[1], nums[2], nums[3], nums[4], 255)
        if len(nums) == 3:
            return cls(1, 0, nums[0], nums[1], nums[2], 255)
        raise ObisError("not an OBIS code: %r" % text)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Obis":
        if len(data) != 6:
            raise ObisError("OBIS octet-string must be 6 bytes, got %d" % len(data))
        return cls(data[0], data[1], data[2], data[3], data[4], data[5])

    def to_bytes(self) -> bytes:
        return bytes(self._g)

    @property
    def groups(self) -> tuple:
        return self._g

    def __str__(self) -> str:
        return "%d.%d.%d.%d.%d.%d" % self._g

    def __repr__(self) -> str:
        return "Obis(%r)" % str(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Obis) and self._g == other._g

    def __lt__(self, other: "Obis") -> bool:
        return self._g < other._g

    def __hash__(self) -> int:
        return hash(self._g)
