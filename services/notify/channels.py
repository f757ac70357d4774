"""The ways a notification leaves: email over SMTP, SMS through an HTTP gateway, signed
webhooks to agency systems. Each channel turns one attempt into an Outcome in the status
vocabulary; the sender (services/notify/sender.py) does claiming, pacing and recording,
the same for all of them.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from email.generator import BytesGenerator
from email.header import Header
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import formataddr, make_msgid, parseaddr
from typing import Any, Protocol

import aiohttp
import aiosmtplib
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.outbound import DestinationRefused, OutboundClient, OutboundPolicy
from core.signing import signature_headers
from services.notify.models import webhook_subscriptions
from services.notify.settings import NotifySettings
from services.notify.sms import SmsGateway
from services.notify.status import Outcome


class Channel(Protocol):
    name: str
    span_name: str
    # Whether the provider de-duplicates a resend of the same notification id (see sender).
    idempotent: bool
    # The column whose value is a separate far end, worked in its own lane (core/lanes.py)
    # so that a slow one holds up no other; None: one provider for the whole channel.
    lane: str | None

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def prepare(self, rows: Sequence[dict[str, Any]]) -> None:
        """Load what a claimed batch needs, in one round trip, before its sends."""

    async def send(self, row: dict[str, Any]) -> Outcome: ...


class EmailChannel:
    name = "email"
    span_name = "smtp send"
    # SMTP has no idempotency key; the stable Message-ID lets a mailbox spot a resend.
    idempotent = False
    lane: str | None = None

    def __init__(self, settings: NotifySettings) -> None:
        self._settings = settings
        name, self._sender = parseaddr(settings.mail_from)
        self._from = formataddr((name, self._sender), "utf-8")
        # One connection kept open across messages: a handshake per message (connect, EHLO,
        # STARTTLS, AUTH, QUIT) would cost more than the message itself.
        self._smtp: aiosmtplib.SMTP | None = None

    async def start(self) -> None:
        pass  # connected lazily, and again after any failure

    async def prepare(self, rows: Sequence[dict[str, Any]]) -> None:
        pass

    async def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None and smtp.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await smtp.quit()

    async def _connection(self) -> aiosmtplib.SMTP:
        if self._smtp is None or not self._smtp.is_connected:
            settings = self._settings
            smtp = aiosmtplib.SMTP(
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                use_tls=settings.smtp_implicit_tls,
                start_tls=settings.smtp_starttls,
                validate_certs=settings.smtp_validate_certs,
                timeout=settings.smtp_timeout_s,
            )
            await smtp.connect()
            if settings.smtp_username:
                await smtp.login(settings.smtp_username, settings.smtp_password or "")
            self._smtp = smtp
        return self._smtp

    async def send(self, row: dict[str, Any]) -> Outcome:
        try:
            message = self._message(row)
            smtp = await self._connection()
            await smtp.sendmail(self._sender, [row["recipient"]], message)
        except aiosmtplib.SMTPAuthenticationError as exc:
            await self.close()
            return Outcome("technical-failure", f"SMTP authentication refused: {exc.code}")
        except aiosmtplib.SMTPRecipientsRefused as exc:
            permanent = all(500 <= r.code < 600 for r in exc.recipients)
            reason = "; ".join(str(r) for r in exc.recipients)
            return Outcome("permanent-failure" if permanent else "temporary-failure", reason)
        except aiosmtplib.SMTPResponseException as exc:
            reason = f"SMTP {exc.code} {exc.message}"
            if 500 <= exc.code < 600:
                return Outcome("permanent-failure", reason)
            return Outcome("temporary-failure", reason)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self.close()  # the connection is in an unknown state
            return Outcome("temporary-failure", f"{type(exc).__name__}: {exc}")
        return Outcome("delivered")

    def _message(self, row: dict[str, Any]) -> bytes:
        """The message as SMTP carries it. Built with the compat32 API, whose headers are
        plain strings: the modern EmailMessage parses and refolds every header through its
        header registry, 1.7 ms of CPU per message against 0.2 ms here (py-spy, make bench).
        Non-ASCII text goes out as RFC 2047 encoded words and a base64 UTF-8 body."""
        for value in (row["recipient"], row["dossier_code"], row["id"]):
            if "\r" in value or "\n" in value:
                raise ValueError("a header value may not contain a line break")
        message = MIMEText(row["body"], "plain", "utf-8")
        message["From"] = self._from
        message["To"] = row["recipient"]
        message["Subject"] = Header(row["subject"], "utf-8").encode(linesep=_CRLF)
        message["Message-ID"] = make_msgid(idstring=row["id"], domain="dossier-gateway")
        message["X-Dossier-Code"] = row["dossier_code"]
        message["X-Notification-Id"] = row["id"]
        out = io.BytesIO()
        BytesGenerator(out, policy=_SMTP_POLICY).flatten(message)
        return out.getvalue()


_CRLF = "\r\n"
# Headers written as they are (the encoded Subject is already folded at 76 characters), so
# a long Message-ID stays on one line (RFC 5322 allows 998).
_SMTP_POLICY = compat32.clone(linesep=_CRLF, max_line_length=None)


class SmsChannel:
    name = "sms"
    span_name = "sms send"
    # The notification id is the gateway's reference: a resend is answered, not billed.
    idempotent = True
    lane: str | None = None

    def __init__(self, settings: NotifySettings) -> None:
        self._gateway = SmsGateway(
            settings.sms_gateway_url, settings.sms_api_key, timeout_s=settings.sms_timeout_s
        )

    async def start(self) -> None:
        await self._gateway.start()

    async def close(self) -> None:
        await self._gateway.close()

    async def prepare(self, rows: Sequence[dict[str, Any]]) -> None:
        pass

    async def send(self, row: dict[str, Any]) -> Outcome:
        result = await self._gateway.send(row["recipient"], row["body"], reference=row["id"])
        return Outcome(result.status, result.reason, result.provider_id, result.retry_after_s)


class WebhookChannel:
    """Standard Webhooks POSTs; receivers de-duplicate on `webhook-id`, the notification id.

    Every callback goes through core.outbound: the URL and each of its addresses are checked
    again at send time (DNS may have changed since the subscription), a redirect is a
    permanent failure, and nothing the receiver wrote is kept, only its status code."""

    name = "webhook"
    span_name = "webhook send"
    idempotent = True
    # Each subscription is its own receiver: one that never answers (a tarpit) must not
    # delay the callbacks of the others.
    lane: str | None = "subscription_id"

    def __init__(
        self,
        settings: NotifySettings,
        sessions: async_sessionmaker[AsyncSession],
        outbound: OutboundClient | None = None,
    ) -> None:
        self._sessions = sessions
        self._outbound = outbound or webhook_client(settings)
        self._secrets: dict[str, str] = {}

    async def start(self) -> None:
        await self._outbound.start()

    async def close(self) -> None:
        await self._outbound.close()

    async def prepare(self, rows: Sequence[dict[str, Any]]) -> None:
        ids = {r["subscription_id"] for r in rows}
        async with self._sessions() as session:
            found = await session.execute(
                select(webhook_subscriptions.c.id, webhook_subscriptions.c.secret).where(
                    webhook_subscriptions.c.id.in_(ids)
                )
            )
        # Updated, not replaced: other lanes (subscriptions) are sending concurrently with
        # what they loaded; a subscription deleted since is forgotten.
        secrets = {row.id: row.secret for row in found}
        for subscription_id in ids:
            if subscription_id in secrets:
                self._secrets[subscription_id] = secrets[subscription_id]
            else:
                self._secrets.pop(subscription_id, None)

    async def send(self, row: dict[str, Any]) -> Outcome:
        secret = self._secrets.get(row["subscription_id"])
        if secret is None:
            return Outcome("permanent-failure", "the webhook subscription was deleted")
        body = row["body"].encode()
        headers = signature_headers(secret, row["id"], body) | {"Content-Type": "application/json"}
        try:
            answer = await self._outbound.post(row["recipient"], body, headers)
        except DestinationRefused as exc:
            return Outcome("permanent-failure", f"callback URL refused: {exc.reason}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The class only: some aiohttp errors quote what the receiver sent.
            return Outcome("temporary-failure", f"no answer: {type(exc).__name__}")
        status = answer.status
        if 200 <= status < 300:
            return Outcome("delivered")
        if 300 <= status < 400:
            return Outcome("permanent-failure", f"{answer.phrase}: redirects are not followed")
        if status in (408, 429) or status >= 500:
            return Outcome("temporary-failure", answer.phrase)
        return Outcome("permanent-failure", answer.phrase)


def webhook_client(settings: NotifySettings) -> OutboundClient:
    """The outbound client of callbacks, also used to check URLs at subscription time."""
    return OutboundClient(
        OutboundPolicy.from_settings(settings),
        timeout_s=settings.webhook_timeout_s,
        trace_configs=[create_trace_config()],
    )
