"""A deliberately racy WebSocket backend (Starlette, run under uvicorn).

It reproduces the bug ReadyGate exists for: the handler accepts the upgrade at once, then
sets up its session in the background; a client message that arrives before set-up is done
kills the session with close 1011.

Routes (any other path behaves like /echo):
  /echo               accept, set up for SETUP_MS, optionally send the ready message, echo.
  /close/{code}       like /echo, but close with {code} (reason "backend closing") after the
                      first echo.
  /forbidden          reject the upgrade (close before accept): uvicorn answers HTTP 403.
  /deny/{status}      reject the upgrade with a full HTTP response: that status, header
                      `x-backend: racy-backend`, body `denied by backend: {status}`.

Plain HTTP routes (for ReadyGate's HTTP forwarding):
  /http/info          any method: a JSON object with the method, path, request headers, the
                      peer's port (the proxy's backend connection) and the body's length and
                      SHA-256 (read as a stream, not buffered).
  /http/stream/{n}    a streamed (chunked) response of n bytes: b"0123456789" repeated.

After set-up, the text message `__info__` is answered (not echoed) with a JSON object
describing the session: the subprotocols the peer offered, the one chosen, the path, query
and request headers.

Environment:
  SETUP_MS              session set-up time in milliseconds (default 200)
  SETUP_JITTER_MS       up to this many milliseconds more, uniformly at random (default 0)
  SEND_READY            "1" to send {"type":"connection_ready"} when set up (default "1")
  BACKEND_SUBPROTOCOLS  comma list the backend supports; it picks the first *offered* one
                        that is in this list (default: none, never picks one)
  CLOSE_LOG             file to append one JSON line per session end
                        {"query", "path", "code", "reason", "by"}
"""

from __future__ import annotations

import asyncio
import json
import os
import random

import hashlib

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

SETUP_MS = float(os.environ.get("SETUP_MS", "200"))
SETUP_JITTER_MS = float(os.environ.get("SETUP_JITTER_MS", "0"))
SEND_READY = os.environ.get("SEND_READY", "1") == "1"
SUPPORTED = [p.strip() for p in os.environ.get("BACKEND_SUBPROTOCOLS", "").split(",") if p.strip()]
CLOSE_LOG = os.environ.get("CLOSE_LOG")
READY_MESSAGE = json.dumps({"type": "connection_ready"}, separators=(",", ":"))


def record(ws: WebSocket, code: int | None, reason: str | None, by: str) -> None:
    if not CLOSE_LOG:
        return
    line = json.dumps(
        {
            "path": ws.url.path,
            "query": ws.url.query,
            "code": code,
            "reason": reason or "",
            "by": by,
        }
    )
    with open(CLOSE_LOG, "a", encoding="utf-8") as f:
        f.write(line + "\n")


async def set_up_session() -> None:
    # Stands in for real work: loading the user, joining rooms, opening a DB session ...
    await asyncio.sleep((SETUP_MS + random.uniform(0, SETUP_JITTER_MS)) / 1000.0)


async def session(ws: WebSocket, close_after_first_echo: int | None = None) -> None:
    offered = list(ws.scope.get("subprotocols") or [])
    chosen = next((p for p in offered if p in SUPPORTED), None)
    await ws.accept(subprotocol=chosen)

    setup = asyncio.create_task(set_up_session())
    first = asyncio.create_task(ws.receive())
    await asyncio.wait({setup, first}, return_when=asyncio.FIRST_COMPLETED)
    if not setup.done():
        # The race: a message (or a close) arrived while the session was being set up.
        setup.cancel()
        message = first.result()
        if message["type"] == "websocket.disconnect":
            record(ws, message.get("code"), message.get("reason"), "client")
            return
        record(ws, 1011, "session not ready", "backend")
        await ws.close(code=1011, reason="session not ready")
        return

    if SEND_READY:
        await ws.send_text(READY_MESSAGE)

    info = {
        "offered": offered,
        "chosen": chosen,
        "path": ws.url.path,
        "query": ws.url.query,
        "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in ws.scope["headers"]},
    }
    pending: asyncio.Task | None = first
    while True:
        if pending is not None:
            message = await pending
            pending = None
        else:
            message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            record(ws, message.get("code"), message.get("reason"), "client")
            return
        text = message.get("text")
        if text is not None:
            if text == "__info__":
                await ws.send_text(json.dumps(info))
                continue
            await ws.send_text(text)
        elif message.get("bytes") is not None:
            await ws.send_bytes(message["bytes"])
        if close_after_first_echo is not None:
            record(ws, close_after_first_echo, "backend closing", "backend")
            await ws.close(code=close_after_first_echo, reason="backend closing")
            return


async def echo(ws: WebSocket) -> None:
    await session(ws)


async def close_with(ws: WebSocket) -> None:
    await session(ws, close_after_first_echo=int(ws.path_params["code"]))


async def forbidden(ws: WebSocket) -> None:
    # Closing before accept makes uvicorn answer the upgrade with HTTP 403.
    await ws.close(code=1008)


async def deny(ws: WebSocket) -> None:
    status = int(ws.path_params["status"])
    await ws.send_denial_response(
        Response(
            f"denied by backend: {status}",
            status_code=status,
            media_type="text/plain",
            headers={"x-backend": "racy-backend"},
        )
    )


async def http_info(request: Request) -> JSONResponse:
    digest = hashlib.sha256()
    length = 0
    async for chunk in request.stream():
        digest.update(chunk)
        length += len(chunk)
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.scope["headers"]],
            "peer_port": request.client.port if request.client else None,
            "body_length": length,
            "body_sha256": digest.hexdigest(),
        }
    )


async def http_stream(request: Request) -> StreamingResponse:
    total = int(request.path_params["n"])

    async def parts():
        sent = 0
        while sent < total:
            size = min(16384, total - sent)
            yield (b"0123456789" * (size // 10 + 1))[:size]
            sent += size

    return StreamingResponse(parts(), media_type="application/octet-stream")


HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]

app = Starlette(
    routes=[
        Route("/http/info", http_info, methods=HTTP_METHODS),
        Route("/http/stream/{n:int}", http_stream, methods=["GET"]),
        WebSocketRoute("/forbidden", forbidden),
        WebSocketRoute("/deny/{status:int}", deny),
        WebSocketRoute("/close/{code:int}", close_with),
        WebSocketRoute("/{rest:path}", echo),
    ]
)
