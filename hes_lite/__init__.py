"""The head end: receivers (HTTP, MQTT), key registry, stores (SQLite by
default, PostgreSQL at scale), API, exports, commands, anomalies, dashboard.

Owns everything after a batch leaves the concentrator. Must not know about
serial ports or radios; shares only the wire formats (batch codec, envelope,
command format) with ``agent``.
"""


class HesError(Exception):
    """Root of every error raised by ``hes_lite``."""

    def __init__(self, message: str = "", **fields: object) -> None:
        super().__init__(message)
        self.fields = fields
        for k, v in fields.items():
            setattr(self, k, v)
