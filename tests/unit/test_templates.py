import unicodedata
from datetime import UTC, datetime

import pytest

from services.notify.templates import TEMPLATES, MissingField, render

CODE = "000.00.01.H22-261122-0001"
BASE = {"code": CODE, "full_name": "Nguyễn Thị Lan", "procedure_name": "Đăng ký khai sinh"}
FIELDS = BASE | {
    "received_at": datetime(2026, 11, 22, 2, 30, tzinfo=UTC),
    "due_at": datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
    "agency_name": "Công an xã Tân Phong",
    "step_name": "Đăng ký thường trú",
    "step_due_at": datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
    "completed_at": datetime(2026, 11, 25, 3, 0, tzinfo=UTC),
    "reason": "Thiếu bản sao giấy chứng sinh",
    "new_due_at": datetime(2026, 12, 1, 10, 0, tzinfo=UTC),
}


def test_received_message_is_vietnamese_with_code_and_due_date() -> None:
    message = render("received", "email", FIELDS)
    assert message.subject == f"Hồ sơ {CODE} đã được tiếp nhận"
    assert (message.template, message.version) == ("received", 1)
    assert "Kính gửi Nguyễn Thị Lan" in message.body
    # Times are shown in Vietnam's time zone (UTC+7).
    assert "09:30 ngày 22/11/2026" in message.body
    assert "17:00 ngày 23/11/2026" in message.body


@pytest.mark.parametrize("key", sorted(TEMPLATES))
def test_every_template_renders_in_precomposed_vietnamese(key: tuple[str, str]) -> None:
    message = render(*key, FIELDS)
    assert CODE in message.body
    # Precomposed (NFC) diacritics: decomposed ones show as broken glyphs on many handsets.
    assert unicodedata.is_normalized("NFC", message.subject + message.body)
    assert "{{" not in message.body
    if key[1] == "sms":
        assert message.subject == ""
        assert len(message.body) <= 160  # at most three UCS-2 segments


def test_the_apology_is_form_04_with_the_new_date_and_the_reason() -> None:
    message = render("apology", "email", FIELDS)
    assert message.subject == f"Phiếu xin lỗi và hẹn lại ngày trả kết quả — hồ sơ {CODE}"
    assert "PHIẾU XIN LỖI VÀ HẸN LẠI NGÀY TRẢ KẾT QUẢ" in message.body
    assert "Lý do: Thiếu bản sao giấy chứng sinh." in message.body
    assert "hẹn lại ngày trả kết quả là ngày 01/12/2026" in message.body
    assert "hẹn trả kết quả ngày 23/11/2026" in message.body


@pytest.mark.parametrize(("template", "field"), [("supplement", "reason"), ("refused", "reason")])
def test_supplement_and_refusal_carry_the_reason(template: str, field: str) -> None:
    for channel in ("email", "sms"):
        assert FIELDS[field] in render(template, channel, FIELDS).body


@pytest.mark.parametrize("missing", ["reason", "new_due_at", "agency_name"])
def test_missing_personalisation_is_an_error_not_a_blank(missing: str) -> None:
    fields = {k: v for k, v in FIELDS.items() if k != missing}
    with pytest.raises(MissingField, match=missing):
        render("apology", "email", fields)
