"""The published crypto vectors in tests/vectors/crypto/ as rows of fields, for
the portable crypto tests (plain Python: runs under pytest and MicroPython)."""


def vectors(name):
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    out = []
    with open(here + "/../vectors/crypto/" + name) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line.split())
    return out


def h(s):
    """A vector field as bytes ("-" is the empty string)."""
    return b"" if s == "-" else bytes.fromhex(s)
