"""A Server-Sent Events parser (the WHATWG rules), fed one line at a time, no I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerEvent:
    event: str  # "message" when the stream named none
    data: str
    id: str | None  # the id field of this event, if it had one


class SSEParser:
    """Feed decoded lines (without their line ending); complete events come out."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, line: str) -> ServerEvent | None:
        """The event a blank line completes, else None."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> ServerEvent | None:
        event_id, self._id = self._id, None
        if not self._data:
            self._event = ""
            return None
        ev = ServerEvent(self._event or "message", "\n".join(self._data), event_id)
        self._event, self._data = "", []
        return ev
