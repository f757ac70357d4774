from __future__ import annotations

from core.settings import ServiceSettings


class NotifySettings(ServiceSettings):
    http_port: int = 8082
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_timeout_s: float = 10.0
    mail_from: str = "Cổng Dịch vụ công <no-reply@dichvucong.gov.vn>"

    send_lease_s: float = 30.0
    send_batch_size: int = 100
    send_poll_interval_s: float = 1.0
    # Temporary failures are retried with backoff for this long, then marked permanent.
    retry_for_s: float = 24 * 3600
    retry_backoff_base_s: float = 2.0
    retry_backoff_max_s: float = 600.0
