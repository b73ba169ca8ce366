"""The local gateway's answers to a ``MemoryBlobStore``'s presigned GET and PUT URLs, served on
its bare hosts as S3 would serve them: refused before a byte of a body too large is read."""

from __future__ import annotations

from urllib.parse import unquote

from aiohttp import web

from hatchway_relay.adapters.memory_blobs import MemoryBlobStore


async def _read_at_most(request: web.BaseRequest, limit: int) -> bytes | None:
    """The request body, or None once it passes ``limit`` bytes (nothing more is read). Read
    as the socket delivers it, so the limit holds mid-stream and the pieces are joined once
    (fixed-size reads would join them twice)."""
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.content.iter_any():
        total += len(chunk)
        if total > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def serve_blob(
    request: web.BaseRequest, store: MemoryBlobStore, raw_key: str
) -> web.Response:
    """One GET or PUT of the object ``raw_key`` (as it appears in the URL)."""
    key = unquote(raw_key)
    query = {name: request.query[name] for name in request.query}
    answer = store.refusal(request.method, key, query, request.content_length)
    body: bytes | None = None
    if answer is None and request.method == "PUT":
        body = await _read_at_most(request, store.max_bytes)
        if body is None:
            answer = store.refusal(request.method, key, query, store.max_bytes + 1)
    if answer is None:
        answer = store.serve(request.method, key, query, body)
    status, data, content_type = answer
    return web.Response(status=status, body=data, content_type=content_type)
