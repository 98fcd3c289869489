"""The concentrator agent: configuration, hourly scheduler, archive, batch
codec, envelope, uplink with store-and-forward, command execution and the
``wum`` CLI.

Owns everything that runs on a concentrator above the wires. Must not know how
the HES stores things.
"""


class AgentError(Exception):
    """Root of every error raised by ``agent``."""

    def __init__(self, message: str = "", **fields: object) -> None:
        super().__init__(message)
        self.fields = fields
        for k, v in fields.items():
            setattr(self, k, v)
