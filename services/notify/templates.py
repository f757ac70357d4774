"""Message templates, in Vietnamese, one per event and channel, each with a version.

Rendering is strict: a missing personalisation field raises before anything is sent, so a
citizen never receives a message with a blank where the dossier code should be. Every
notification stores the template id and version it was rendered from: when a wording
changes, bump the version, and what each citizen actually read stays traceable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jinja2 import Environment, StrictUndefined, Template, UndefinedError

from core.calendar import VIETNAM

_env = Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)  # noqa: S701  plain-text mail


def _vn_time(value: datetime) -> str:
    return value.astimezone(VIETNAM).strftime("%H:%M ngày %d/%m/%Y")


def _vn_date(value: datetime) -> str:
    return value.astimezone(VIETNAM).strftime("%d/%m/%Y")


_env.filters["vn_time"] = _vn_time
_env.filters["vn_date"] = _vn_date

_FOOTER = (
    "\n\nTra cứu tiến độ hồ sơ bằng mã {{ code }}.\nĐây là thư tự động, vui lòng không trả lời.\n"
)
_DEAR = "Kính gửi {{ full_name }},\n\n"


@dataclass(frozen=True)
class TemplateText:
    version: int
    subject: str
    body: str


# (template id, channel) -> wording. SMS has no subject and stays short: one Vietnamese
# diacritic makes the whole text UCS-2, 70 characters a segment.
TEMPLATES: dict[tuple[str, str], TemplateText] = {
    ("received", "email"): TemplateText(
        1,
        "Hồ sơ {{ code }} đã được tiếp nhận",
        _DEAR + "Hồ sơ {{ code }} — {{ procedure_name }} — đã được tiếp nhận lúc "
        "{{ received_at|vn_time }}.\n"
        "Ngày hẹn trả kết quả: {{ due_at|vn_time }}." + _FOOTER,
    ),
    ("received", "sms"): TemplateText(
        1, "", "Hồ sơ {{ code }} đã được tiếp nhận. Hẹn trả kết quả: {{ due_at|vn_date }}."
    ),
    ("routed", "email"): TemplateText(
        1,
        "Hồ sơ {{ code }} đã được chuyển đến {{ agency_name }}",
        _DEAR + "Hồ sơ {{ code }} — {{ procedure_name }} — đã được chuyển đến {{ agency_name }} "
        "để thực hiện bước «{{ step_name }}». Hạn giải quyết bước này: {{ step_due_at|vn_time }}."
        + _FOOTER,
    ),
    ("routed", "sms"): TemplateText(
        1, "", "Hồ sơ {{ code }} đã được chuyển đến {{ agency_name }}."
    ),
    ("completed", "email"): TemplateText(
        1,
        "Hồ sơ {{ code }} đã được giải quyết xong",
        _DEAR + "Hồ sơ {{ code }} — {{ procedure_name }} — đã được giải quyết xong lúc "
        "{{ completed_at|vn_time }}. Mời Ông/Bà nhận kết quả theo hình thức đã đăng ký." + _FOOTER,
    ),
    ("completed", "sms"): TemplateText(
        1, "", "Hồ sơ {{ code }} đã có kết quả. Mời Ông/Bà nhận kết quả theo hình thức đã đăng ký."
    ),
    ("supplement", "email"): TemplateText(
        1,
        "Hồ sơ {{ code }} cần bổ sung",
        _DEAR + "{{ agency_name }} đề nghị Ông/Bà bổ sung, hoàn thiện hồ sơ {{ code }} — "
        "{{ procedure_name }}.\nNội dung cần bổ sung: {{ reason }}." + _FOOTER,
    ),
    ("supplement", "sms"): TemplateText(1, "", "Hồ sơ {{ code }} cần bổ sung: {{ reason }}."),
    ("refused", "email"): TemplateText(
        1,
        "Hồ sơ {{ code }} không được giải quyết",
        _DEAR + "{{ agency_name }} thông báo hồ sơ {{ code }} — {{ procedure_name }} — "
        "không đủ điều kiện giải quyết.\nLý do: {{ reason }}." + _FOOTER,
    ),
    ("refused", "sms"): TemplateText(
        1, "", "Hồ sơ {{ code }} không được giải quyết. Lý do: {{ reason }}."
    ),
    # Form 04 of Circular 01/2018/TT-VPCP: the apology and new appointment for a late dossier.
    ("apology", "email"): TemplateText(
        1,
        "Phiếu xin lỗi và hẹn lại ngày trả kết quả — hồ sơ {{ code }}",
        "PHIẾU XIN LỖI VÀ HẸN LẠI NGÀY TRẢ KẾT QUẢ\n\n"
        + _DEAR
        + "Ngày {{ received_at|vn_date }}, hồ sơ {{ code }} — {{ procedure_name }} — của "
        "Ông/Bà đã được tiếp nhận, hẹn trả kết quả ngày {{ due_at|vn_date }}.\n"
        "Tuy nhiên đến nay, {{ agency_name }} chưa trả kết quả giải quyết hồ sơ của Ông/Bà.\n"
        "Lý do: {{ reason }}.\n"
        "Sự chậm trễ này đã gây phiền hà, tốn kém chi phí đi lại của Ông/Bà. "
        "{{ agency_name }} xin lỗi Ông/Bà và hẹn lại ngày trả kết quả là "
        "ngày {{ new_due_at|vn_date }}.\nMong nhận được sự thông cảm của Ông/Bà." + _FOOTER,
    ),
    ("apology", "sms"): TemplateText(
        1,
        "",
        "Xin lỗi Ông/Bà: hồ sơ {{ code }} chậm trả kết quả ({{ reason }}). "
        "Hẹn lại ngày {{ new_due_at|vn_date }}.",
    ),
}


# Compiled once: compiling a Jinja template costs far more than rendering it.
_COMPILED: dict[tuple[str, str], tuple[Template, Template]] = {
    key: (_env.from_string(text.subject), _env.from_string(text.body))
    for key, text in TEMPLATES.items()
}


class MissingField(ValueError):
    """A personalisation field the template needs is absent; str(exc) says which."""


@dataclass(frozen=True)
class Rendered:
    template: str
    version: int
    subject: str
    body: str


def render(template: str, channel: str, fields: dict[str, Any]) -> Rendered:
    subject, body = _COMPILED[(template, channel)]
    try:
        return Rendered(
            template=template,
            version=TEMPLATES[(template, channel)].version,
            subject=subject.render(fields),
            body=body.render(fields),
        )
    except UndefinedError as exc:
        raise MissingField(
            f"template {template} v{TEMPLATES[(template, channel)].version} ({channel}): {exc}"
        ) from exc
