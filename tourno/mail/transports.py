"""Where messages go: an SMTP server, stdout, or .eml files.

A transport sends one :class:`email.message.EmailMessage` at a time and says
how a failure should be treated by raising :class:`TemporaryMailError` (try
again later) or :class:`PermanentMailError` (this message will never go).
Transports are reusable after :meth:`Transport.close`.
"""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
import sys
import threading
import uuid
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from tourno.config import Settings

log = logging.getLogger(__name__)

# Replies that mean "not now": the server is busy, out of resources or
# greylisting. 421 also means the server is closing the connection.
TEMPORARY_CODES = frozenset({421, 450, 451, 452})
# A recipient the server says does not exist (or is not allowed): a hard
# bounce, so the address is suppressed.
RECIPIENT_BOUNCE_CODES = frozenset({550, 551, 553})

SMTP_TIMEOUT = 30.0


class MailError(Exception):
    """Sending one message failed. ``code`` is the SMTP reply code, if any."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class TemporaryMailError(MailError):
    """Try again later: 4xx replies, refused, reset or timed-out connections."""

    def __init__(self, message: str, code: int | None = None, *, connection: bool = False) -> None:
        super().__init__(message, code)
        # The server could not be reached at all: no point trying the next message now.
        self.connection = connection


class PermanentMailError(MailError):
    """This message will never be accepted: 5xx replies, a malformed message."""

    def __init__(self, message: str, code: int | None = None, *, hard_bounce: bool = False) -> None:
        super().__init__(message, code)
        # The recipient address itself was rejected: suppress it.
        self.hard_bounce = hard_bounce


def classify_reply(code: int, text: str, stage: str) -> MailError:
    """The error for an SMTP reply ``code`` at ``stage`` (mail, rcpt, data)."""
    message = f"SMTP {code} at {stage.upper()}: {text}".strip()
    if 400 <= code < 500:
        return TemporaryMailError(message, code, connection=code == 421)
    return PermanentMailError(message, code, hard_bounce=stage == "rcpt" and code in RECIPIENT_BOUNCE_CODES)


def envelope_sender(message: EmailMessage) -> str:
    return parseaddr(str(message["From"]))[1]


class Transport:
    """Base class; subclasses implement :meth:`send`."""

    name = "base"

    def send(self, message: EmailMessage) -> str:
        """Deliver ``message``; returns an id for ``provider_message_id``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection, if any."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SMTPTransport(Transport):
    """SMTP over smtplib, one connection reused for up to ``max_per_connection``
    messages (providers limit messages per connection; reconnecting for every
    message costs a TCP and TLS handshake each)."""

    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: str = "none",
        username: str | None = None,
        password: str | None = None,
        max_per_connection: int = 100,
        timeout: float = SMTP_TIMEOUT,
        local_hostname: str | None = None,
    ) -> None:
        # "ssl" is the old name of implicit TLS, as in TOURNO_MAIL_SECURITY.
        security = "tls" if security == "ssl" else security
        if security not in ("none", "starttls", "tls"):
            raise ValueError(f"security must be none, starttls or tls, got {security!r}")
        self.host = host
        self.port = port
        self.security = security
        self.username = username
        self.password = password
        self.max_per_connection = max(1, max_per_connection)
        self.timeout = timeout
        self.local_hostname = local_hostname
        self._smtp: smtplib.SMTP | None = None
        self._sent_on_connection = 0
        self.connections_opened = 0

    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        try:
            if self.security == "tls":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host,
                    self.port,
                    timeout=self.timeout,
                    context=context,
                    local_hostname=self.local_hostname,
                )
            else:
                smtp = smtplib.SMTP(
                    self.host, self.port, timeout=self.timeout, local_hostname=self.local_hostname
                )
            try:
                smtp.ehlo()
                if self.security == "starttls":
                    smtp.starttls(context=context)
                    smtp.ehlo()
                if self.username:
                    smtp.login(self.username, self.password or "")
            except BaseException:
                _quietly_close(smtp)
                raise
        except smtplib.SMTPAuthenticationError as exc:
            # Wrong credentials will not fix themselves, but they are not the
            # message's fault either: retry later, after someone fixes them.
            raise TemporaryMailError(
                f"SMTP login to {self.host}:{self.port} failed: {exc.smtp_code} {_text(exc.smtp_error)}",
                exc.smtp_code,
                connection=True,
            ) from None
        except smtplib.SMTPResponseException as exc:
            err = classify_reply(exc.smtp_code, _text(exc.smtp_error), "connect")
            raise TemporaryMailError(str(err), exc.smtp_code, connection=True) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TemporaryMailError(
                f"cannot connect to SMTP server {self.host}:{self.port}: {exc or type(exc).__name__}",
                connection=True,
            ) from None
        self.connections_opened += 1
        self._sent_on_connection = 0
        log.debug("connected to SMTP server %s:%s (security=%s)", self.host, self.port, self.security)
        return smtp

    def send(self, message: EmailMessage) -> str:
        if self._smtp is not None and self._sent_on_connection >= self.max_per_connection:
            self.close()
        fresh = self._smtp is None
        if self._smtp is None:
            self._smtp = self._connect()
        try:
            return self._transaction(self._smtp, message)
        except smtplib.SMTPServerDisconnected as exc:
            self._drop()
            if not fresh:
                # The server closed an idle connection between messages: one new try.
                self._smtp = self._connect()
                try:
                    return self._transaction(self._smtp, message)
                except smtplib.SMTPServerDisconnected as again:
                    self._drop()
                    raise TemporaryMailError(f"SMTP server disconnected: {again}", connection=True) from None
                except OSError as again:
                    self._drop()
                    raise TemporaryMailError(f"SMTP connection failed: {again}", connection=True) from None
            raise TemporaryMailError(f"SMTP server disconnected: {exc}", connection=True) from None
        except OSError as exc:  # reset, timeout
            self._drop()
            raise TemporaryMailError(
                f"SMTP connection failed: {exc or type(exc).__name__}", connection=True
            ) from None
        except smtplib.SMTPResponseException as exc:  # e.g. DATA refused before the body
            if self._smtp is not None:
                self._failed(self._smtp, exc.smtp_code)
            raise classify_reply(exc.smtp_code, _text(exc.smtp_error), "data") from None
        except UnicodeError as exc:
            # A non-ASCII address and a server without SMTPUTF8: this message can never go.
            if self._smtp is not None:
                self._failed(self._smtp, 0)
            raise PermanentMailError(f"cannot encode the message for this server: {exc}") from None

    def _transaction(self, smtp: smtplib.SMTP, message: EmailMessage) -> str:
        """MAIL, RCPT, DATA one step at a time, so a refusal is tied to its stage
        (a 550 at RCPT is a bounced recipient; at DATA it is the content)."""
        recipients = [parseaddr(str(v))[1] for v in message.get_all("To", [])]
        sender = envelope_sender(message)
        options = ["SMTPUTF8"] if smtp.has_extn("smtputf8") and not _is_ascii(message) else []
        code, reply = smtp.mail(sender, options)
        if code != 250:
            self._failed(smtp, code)
            raise classify_reply(code, _text(reply), "mail")
        for rcpt in recipients:
            code, reply = smtp.rcpt(rcpt)
            if code not in (250, 251):
                self._failed(smtp, code)
                raise classify_reply(code, _text(reply), "rcpt")
        policy = message.policy.clone(linesep="\r\n")
        data = message.as_bytes(policy=policy)
        code, reply = smtp.data(data)
        if code != 250:
            self._failed(smtp, code)
            raise classify_reply(code, _text(reply), "data")
        self._sent_on_connection += 1
        return str(message["Message-ID"] or "").strip("<>") or _text(reply)

    def _failed(self, smtp: smtplib.SMTP, code: int) -> None:
        """After a refusal: reset the transaction so the connection serves the
        next message, or drop it when the server is closing it (421)."""
        if code == 421:
            self._drop()
            return
        try:
            smtp.rset()
        except (OSError, smtplib.SMTPException):
            self._drop()

    def _drop(self) -> None:
        if self._smtp is not None:
            _quietly_close(self._smtp, quit=False)
        self._smtp = None

    def close(self) -> None:
        if self._smtp is not None:
            _quietly_close(self._smtp)
        self._smtp = None


class ConsoleTransport(Transport):
    """Prints each message to stdout: for local runs, where mail should be seen, not sent."""

    name = "console"
    _lock = threading.Lock()

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def send(self, message: EmailMessage) -> str:
        stream = self._stream or sys.stdout  # looked up late: the CLI's tests swap stdout
        text = message.as_string()
        with self._lock:
            stream.write(f"{'-' * 20} email {'-' * 20}\n{text}\n{'-' * 47}\n")
            stream.flush()
        return str(message["Message-ID"] or "").strip("<>")


class FileTransport(Transport):
    """Writes each message to ``<directory>/<message id>.eml``."""

    name = "file"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def send(self, message: EmailMessage) -> str:
        return self.write(message)[0]

    def write(self, message: EmailMessage) -> tuple[str, Path]:
        """Write ``message``; returns its message id and the file's path."""
        message_id = str(message["Message-ID"] or "").strip("<>") or uuid.uuid4().hex
        safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in message_id)
        path = self.directory / f"{safe}.eml"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".eml.tmp")
            tmp.write_bytes(bytes(message))
            os.replace(tmp, path)  # a reader never sees half a file
        except OSError as exc:
            # A full disk or a bad permission is the directory's problem, not the message's.
            raise TemporaryMailError(f"cannot write {self.directory}: {exc.strerror or exc}") from None
        return message_id, path


class SummaryTransport(FileTransport):
    """One line per message on stdout (to, subject, file), the whole message
    kept as a file as :class:`FileTransport` does: ``tourno up``'s default,
    where full messages (fifty lines each, hundreds of them) would drown
    everything else the processes print."""

    name = "summary"

    def __init__(self, directory: str | os.PathLike[str], stream: TextIO | None = None) -> None:
        super().__init__(directory)
        self._stream = stream

    def send(self, message: EmailMessage) -> str:
        message_id, path = self.write(message)
        stream = self._stream or sys.stdout
        line = f"email to {message['To']}: {message['Subject']} ({path})\n"
        with ConsoleTransport._lock:
            stream.write(line)
            stream.flush()
        return message_id


def from_settings(settings: Settings) -> Transport:
    """The transport ``TOURNO_MAIL_TRANSPORT`` names, configured."""
    if settings.mail_transport == "smtp":
        return SMTPTransport(
            settings.mail_host,
            settings.mail_port,
            security=settings.mail_security,
            username=settings.mail_username,
            password=settings.mail_password,
            max_per_connection=settings.mail_max_per_connection,
        )
    if settings.mail_transport == "file":
        return FileTransport(settings.mail_file_dir)
    if settings.mail_transport == "summary":
        return SummaryTransport(settings.mail_file_dir)
    return ConsoleTransport()


def _quietly_close(smtp: smtplib.SMTP, quit: bool = True) -> None:
    try:
        if quit:
            smtp.quit()
    except (OSError, smtplib.SMTPException):
        pass
    try:
        smtp.close()
    except OSError:
        pass


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _is_ascii(message: EmailMessage) -> bool:
    addrs = [envelope_sender(message)] + [parseaddr(str(v))[1] for v in message.get_all("To", [])]
    return all(a.isascii() for a in addrs)


__all__ = [
    "ConsoleTransport",
    "FileTransport",
    "MailError",
    "PermanentMailError",
    "SMTPTransport",
    "TemporaryMailError",
    "Transport",
    "classify_reply",
    "from_settings",
]
