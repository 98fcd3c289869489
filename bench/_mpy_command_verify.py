"""Run by bench/command_latency.py in the MicroPython WebAssembly runner
(``node tests/mpy/runner.mjs bench/_mpy_command_verify.py``): the runner
times each ``test_*`` function, and these are the agent's verify costs —
parse + Ed25519 verify (pure Python: the WebAssembly port has no sha512) of
the worked example of docs/command-format.md. The leading underscore keeps
``make bench`` from running it as a script."""

from agent import command


def _example():
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    with open(here + "/../tests/vectors/command/examples.txt") as f:
        for line in f:
            if line.startswith("disconnect "):
                _name, _secret, public, signed = line.split()
                return bytes.fromhex(public), bytes.fromhex(signed)
    raise ValueError("no disconnect example")


PUBLIC, SIGNED = _example()


def test_1_parse_only():
    command.parse_signed(SIGNED)


def test_2_parse_and_verify():
    cmd = command.verify(SIGNED, [PUBLIC], "DC-0001")
    assert cmd.op == "disconnect"


def test_3_parse_and_verify_again():
    # warm: the SHA-512 constants and the base point are computed on first use
    command.verify(SIGNED, [PUBLIC], "DC-0001")
