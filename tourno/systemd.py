"""``sd_notify`` for services run by systemd with ``Type=notify``, standard library only.

systemd passes the path of a datagram socket in ``$NOTIFY_SOCKET``; a service
reports its state by sending newline-separated ``KEY=VALUE`` assignments to it
(``READY=1``, ``STOPPING=1``, ``STATUS=...``). A path starting with ``@`` names
a socket in the abstract namespace (Linux), whose address starts with a NUL
byte. Outside systemd the variable is unset and every call here is a no-op, so
the same command runs under supervisord, systemd or a terminal.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

ENV = "NOTIFY_SOCKET"


def notify(*assignments: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``assignments`` (e.g. ``"READY=1"``) in one datagram.

    Returns True when a datagram was sent, False when there is no socket to
    send to or sending failed. Never raises: a worker must not die because its
    service manager stopped listening.
    """
    address = (os.environ if environ is None else environ).get(ENV, "")
    if not address or not assignments:
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    elif address[0] != "/":
        log.warning("%s=%r is neither an absolute path nor an abstract socket; not notifying", ENV, address)
        return False
    message = "\n".join(assignments).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, address)
    except OSError as exc:
        log.warning("cannot notify the service manager at %s: %s", ENV, exc)
        return False
    return True


def ready(status: str | None = None) -> bool:
    """The service has started and is doing its work."""
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def stopping(status: str | None = None) -> bool:
    """The service is shutting down (it may still finish current work)."""
    return notify("STOPPING=1", *([f"STATUS={status}"] if status else []))


def status(text: str) -> bool:
    """A one-line description of what the service is doing, shown by ``systemctl status``."""
    return notify(f"STATUS={text}")
