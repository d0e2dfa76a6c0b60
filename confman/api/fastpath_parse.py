"""Request heads for the fast front, parsed by llhttp (``httptools``) in its strict mode.

The front finds where a head ends (the first CRLF CRLF: in a head llhttp accepts, no earlier
one can occur) and hands exactly those bytes, then exactly the body, to ``HeadReader``. A
head llhttp rejects (bare CR or LF, NUL and other control bytes, obs-fold, a space before a
colon, duplicate or invalid Content-Length, Transfer-Encoding beside Content-Length, ...)
yields None, and so does anything else than one keep-alive HTTP/1.1 request without
Upgrade: the front then leaves the request to aiohttp.
"""

from __future__ import annotations

from dataclasses import dataclass

import httptools

from confman.api.auth import Principal

#: What llhttp raises for a message the front leaves to aiohttp (an upgrade, CONNECT, or
#: anything it rejects); HttpParserUpgrade is no HttpParserError.
REJECTED = (httptools.HttpParserError, httptools.HttpParserUpgrade)


@dataclass(slots=True)
class RawHead:
    """One request head as llhttp read it."""

    method: bytes
    url: bytes
    #: (lower-case name, value), in order, duplicates kept.
    fields: list[tuple[bytes, bytes]]
    #: True when the message ended with its head (no body announced).
    complete: bool


class HeadReader:
    """The llhttp parser of one connection, fed one whole head (then body) at a time."""

    __slots__ = ("_begun", "_done", "_fields", "_headed", "_parser", "_url")

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._fields: list[tuple[bytes, bytes]] = []
        self._begun = 0
        self._headed = False
        self._done = False

    # llhttp's callbacks
    def on_message_begin(self) -> None:
        self._begun += 1

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._headed = True

    def on_message_complete(self) -> None:
        self._done = True

    def head(self, data: bytes) -> RawHead | None:
        """``data``, a head up to and including its blank line, or None when llhttp rejects
        it or it is not one plain keep-alive HTTP/1.1 request."""
        self._url = b""
        self._fields = []
        self._begun = 0
        self._headed = self._done = False
        parser = self._parser
        try:
            parser.feed_data(data)
        except REJECTED:
            return None
        if not self._headed or self._begun != 1:
            return None
        if parser.get_http_version() != "1.1" or not parser.should_keep_alive():
            return None
        if parser.should_upgrade():
            return None
        return RawHead(parser.get_method(), self._url, self._fields, self._done)

    def probe(self, data: bytes) -> bool:
        """Feed the next bytes of a head still incomplete (no CRLF CRLF yet) to this reader,
        kept for that; False as soon as llhttp rejects them (or, oddly, sees a head end)."""
        try:
            self._parser.feed_data(data)
        except REJECTED:
            return False
        return not self._headed

    def body(self, data: bytes) -> bool:
        """Whether ``data`` ends the message whose head was read last, exactly."""
        try:
            self._parser.feed_data(data)
        except REJECTED:
            return False
        return self._done and self._begun == 1


@dataclass(slots=True)
class FastHead:
    """What the fast path needs from a request head of its shape."""

    path: str
    ns: str
    key: str
    principal: Principal
    cid: str | None
    content_type: bytes | None
    length: int  # Content-Length (0 when absent)
