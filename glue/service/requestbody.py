"""A request's body as its sender meant it: the one place its `Content-Encoding` is undone.

The glue's server does not inflate bodies itself (`auto_decompress=False` in
`glue.service.app`): aiohttp's own inflating fails inside its HTTP parser, where a
body that is not what its header says is an unhandled error that drops the
connection, the proxy's keep-alive one that other users' requests share.
Here a bad body is the sender's mistake, a 400 like any other, and the
connection stays usable.
"""

from __future__ import annotations

import zlib

from aiohttp import web

from glue.core.errors import BadRequest, PayloadTooLarge

# zlib's window bits per content coding (RFC 9110 8.4.1): gzip's header, deflate's zlib one
WINDOW_BITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}


def coding(request: web.Request) -> str:
    """The body's content coding, lower case; "" when there is none (or `identity`)."""
    value = request.headers.get("Content-Encoding", "").strip().lower()
    return "" if value == "identity" else value


def require_plain(request: web.Request) -> None:
    """Forms come from browsers, which never compress them: one with a coding is refused."""
    if coding(request):
        raise BadRequest(
            "Send forms without a Content-Encoding.", code="unsupported_media_type", status=415
        )


async def read(request: web.Request, limit: int) -> bytes:
    """The body, decoded; a decoded body over `limit` bytes is refused, as a plain one is
    (aiohttp's `client_max_size` bounds the bytes sent, this the bytes they inflate to)."""
    data = await request.read()
    name = coding(request)
    if not name:
        return data
    if name not in WINDOW_BITS:
        raise BadRequest(
            f"The request body's Content-Encoding {name[:40]!r} is not supported: send it "
            "uncompressed, or as gzip or deflate.",
            code="unsupported_media_type",
            status=415,
        )
    inflater = zlib.decompressobj(WINDOW_BITS[name])
    try:
        decoded = inflater.decompress(data, limit + 1)
        if len(decoded) <= limit and not inflater.unconsumed_tail:
            decoded += inflater.flush()
    except zlib.error:
        raise BadRequest(
            f"The request body is not valid {name} data, as its Content-Encoding says.",
            code="invalid_encoding",
        ) from None
    if len(decoded) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge("The request body is too large once decompressed.")
    if not inflater.eof or inflater.unused_data:
        raise BadRequest(
            f"The request body is not valid {name} data, as its Content-Encoding says "
            "(it is cut short, or more follows it).",
            code="invalid_encoding",
        )
    return decoded
