"""AE titles, allowed callers and destinations, parsed strictly from the environment.

Pure functions (no Django): ``webapp.settings`` calls them at start-up, so a
typo in ``DICOM_DESTINATIONS`` stops the process with a message instead of
silently sending nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# PS3.5 AE: at most 16 characters of the default repertoire, no backslash or
# control characters; leading and trailing spaces are not significant.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
_HOST = re.compile(r"^[A-Za-z0-9.\-:\[\]]{1,253}$")
ANY_AE = "*"


class InvalidNode(ValueError):
    pass


def ae_title(value: str, what: str = "AE title") -> str:
    title = value.strip()
    if not _AE_TITLE.match(title):
        raise InvalidNode(f"{what} {value!r} is not a DICOM AE title (1–16 printable characters, no backslash)")
    return title


@dataclass(frozen=True)
class Caller:
    """Who may open an association: an AE title (or any, ``*``), optionally only from one host."""

    ae_title: str
    host: str | None = None

    @classmethod
    def parse(cls, text: str) -> Caller:
        title, _, host = text.strip().partition("@")
        if host and not _HOST.match(host):
            raise InvalidNode(f"DICOM_ALLOWED_CALLERS: {host!r} in {text!r} is not a host name or address")
        title = ANY_AE if title.strip() == ANY_AE else ae_title(title, "DICOM_ALLOWED_CALLERS:")
        if title == ANY_AE and not host:
            raise InvalidNode(
                "DICOM_ALLOWED_CALLERS: '*' needs a host ('*@10.0.0.5'): any AE from anywhere is too open"
            )
        return cls(title, host or None)

    def allows(self, calling_ae: str, address: str) -> bool:
        return (self.ae_title in (ANY_AE, calling_ae.strip())) and (self.host is None or self.host == address)

    def __str__(self) -> str:
        return self.ae_title + (f"@{self.host}" if self.host else "")


def parse_callers(items: list[str]) -> tuple[Caller, ...]:
    return tuple(Caller.parse(item) for item in items if item.strip())


def caller_allowed(callers: tuple[Caller, ...], calling_ae: str, address: str) -> bool:
    """Empty means nobody: a listener open to every sender on the network is never the default."""
    return any(caller.allows(calling_ae, address) for caller in callers)


@dataclass(frozen=True)
class Destination:
    """A peer that receives our results with C-STORE: ``AE@host:port``."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        match = re.fullmatch(r"\s*([^@]+)@(.+):(\d{1,5})\s*", text)
        if not match:
            raise InvalidNode(f"DICOM_DESTINATIONS: {text!r} is not AE@host:port (e.g. PACS@10.0.0.7:104)")
        title, host, port = match.groups()
        if not _HOST.match(host):
            raise InvalidNode(f"DICOM_DESTINATIONS: {host!r} in {text!r} is not a host name or address")
        if not 0 < int(port) < 65536:
            raise InvalidNode(f"DICOM_DESTINATIONS: port {port} in {text!r} is not between 1 and 65535")
        return cls(ae_title(title, "DICOM_DESTINATIONS:"), host.strip("[]"), int(port))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_destinations(items: list[str]) -> tuple[Destination, ...]:
    destinations = tuple(Destination.parse(item) for item in items if item.strip())
    if len({str(d) for d in destinations}) != len(destinations):
        raise InvalidNode("DICOM_DESTINATIONS names the same destination twice")
    return destinations
