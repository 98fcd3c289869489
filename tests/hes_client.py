"""Calling the HES-lite ASGI app in-process (httpx over ASGI, the real
Starlette app and store): fast enough for route x role matrices. The
over-the-wire behaviour (uvicorn, TLS, a real socket) is tested in
tests/test_hes_serve.py and tests/test_auth_serve.py."""

from __future__ import annotations

import asyncio

import httpx


class AppClient:
    def __init__(self, app) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app, client=("10.9.8.7", 4242)),
                                        base_url="http://hes.test")

    def request(self, method: str, path: str, token: str | None = None, **kw) -> httpx.Response:
        headers = dict(kw.pop("headers", {}) or {})
        if token is not None:
            headers["authorization"] = "Bearer " + token
        return self.loop.run_until_complete(self.client.request(method, path, headers=headers,
                                                                **kw))

    def get(self, path: str, token: str | None = None, **kw) -> httpx.Response:
        return self.request("GET", path, token, **kw)

    def post(self, path: str, token: str | None = None, **kw) -> httpx.Response:
        return self.request("POST", path, token, **kw)

    def put(self, path: str, token: str | None = None, **kw) -> httpx.Response:
        return self.request("PUT", path, token, **kw)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()
