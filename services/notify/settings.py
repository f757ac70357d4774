from __future__ import annotations

from pydantic import Field

from core.catalogue_client import CatalogueSettings
from core.outbound import OutboundSettings
from core.settings import ServiceSettings


# Procedure names in messages come from routing's catalogue (CatalogueSettings).
class NotifySettings(ServiceSettings, OutboundSettings, CatalogueSettings):
    http_port: int = 8082
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    # Plain SMTP by default (the sandbox relay); a real relay wants STARTTLS or implicit TLS
    # (port 465) and authentication.
    smtp_starttls: bool = False
    smtp_implicit_tls: bool = False
    smtp_validate_certs: bool = True
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_timeout_s: float = 10.0
    mail_from: str = "Cổng Dịch vụ công <no-reply@dichvucong.gov.vn>"

    sms_enabled: bool = False
    sms_gateway_url: str = ""
    sms_api_key: str = ""
    sms_timeout_s: float = 10.0

    webhook_timeout_s: float = 10.0
    # Callbacks of one subscription in flight at once: the rest of its queue waits, and the
    # other subscriptions' callbacks go on (core/lanes.py).
    webhook_subscription_in_flight_max: int = Field(default=4, ge=1)
    # ...and of all subscriptions together: 125 receivers holding every call open at once.
    webhook_in_flight_max: int = Field(default=500, ge=1)
    # Subscriptions one agency may hold: each is a stream of signed requests we send.
    webhook_max_subscriptions: int = 20
    # Where agency systems read a dossier (intake's GET /v1/dossiers/{code}, which checks
    # the reader's rights): the link in every callback, which carries no personal data.
    intake_public_url: str = "http://127.0.0.1:8080"

    # Pacing per channel (token bucket: rate and burst) and a daily cap (0: none). Over the
    # limit messages wait their turn; nothing is dropped.
    email_rate_per_s: float = 50.0
    email_burst: int = 50
    email_daily_cap: int = 0
    sms_rate_per_s: float = 20.0
    sms_burst: int = 20
    sms_daily_cap: int = 0
    webhook_rate_per_s: float = 50.0
    webhook_burst: int = 50
    webhook_daily_cap: int = 0
    # Replicas of notify sharing the providers: each paces itself at rate/replicas (burst
    # likewise), as the rate is counted in memory. Daily caps need no division: the day's
    # count is kept in the database, one for all replicas (services/notify/daily_cap.py).
    send_replicas: int = Field(default=1, ge=1)

    send_lease_s: float = 30.0
    send_batch_size: int = 100
    send_poll_interval_s: float = 1.0
    # Emails marked in flight together, in one commit, before they are handed to the mail
    # server (services/notify/sender.py). 1: one commit per email, and a crash gives up the
    # one email that was in flight. N: one commit per N emails, and a crash gives up to N.
    email_in_flight_max: int = Field(default=1, ge=1)
    # Temporary failures are retried with backoff for this long, then marked permanent.
    retry_for_s: float = 24 * 3600
    retry_backoff_base_s: float = 2.0
    retry_backoff_max_s: float = 600.0
