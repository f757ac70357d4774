from datetime import UTC, datetime

import pytest
from jinja2 import UndefinedError

from services.notify.templates import render


def test_received_message_is_vietnamese_with_code_and_due_date() -> None:
    message = render(
        "received",
        {
            "code": "000.00.01.H22-261122-0001",
            "full_name": "Nguyễn Thị Lan",
            "procedure_name": "Đăng ký khai sinh",
            "received_at": datetime(2026, 11, 22, 2, 30, tzinfo=UTC),
            "due_at": datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
        },
    )
    assert message.subject == "Hồ sơ 000.00.01.H22-261122-0001 đã được tiếp nhận"
    assert "Kính gửi Nguyễn Thị Lan" in message.body
    # Times are shown in Vietnam's time zone (UTC+7).
    assert "09:30 ngày 22/11/2026" in message.body
    assert "17:00 ngày 23/11/2026" in message.body


def test_missing_personalisation_is_an_error_not_a_blank() -> None:
    with pytest.raises(UndefinedError):
        render("routed", {"code": "X", "full_name": "A", "procedure_name": "P"})
