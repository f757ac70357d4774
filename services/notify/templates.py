"""Message templates, in Vietnamese, one per event and channel.

Rendering is strict: a missing personalisation field raises before anything is sent, so a
citizen never receives a message with a blank where the dossier code should be.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jinja2 import Environment, StrictUndefined

from core.calendar import VIETNAM

_env = Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)  # noqa: S701  plain-text mail


def _vn_time(value: datetime) -> str:
    return value.astimezone(VIETNAM).strftime("%H:%M ngày %d/%m/%Y")


_env.filters["vn_time"] = _vn_time

_FOOTER = (
    "\n\nTra cứu tiến độ hồ sơ bằng mã {{ code }}.\nĐây là thư tự động, vui lòng không trả lời.\n"
)

TEMPLATES: dict[str, tuple[str, str]] = {
    "received": (
        "Hồ sơ {{ code }} đã được tiếp nhận",
        "Kính gửi {{ full_name }},\n\n"
        "Hồ sơ {{ code }} — {{ procedure_name }} — đã được tiếp nhận lúc "
        "{{ received_at|vn_time }}.\n"
        "Ngày hẹn trả kết quả: {{ due_at|vn_time }}." + _FOOTER,
    ),
    "routed": (
        "Hồ sơ {{ code }} đã được chuyển đến {{ agency_name }}",
        "Kính gửi {{ full_name }},\n\n"
        "Hồ sơ {{ code }} — {{ procedure_name }} — đã được chuyển đến {{ agency_name }} "
        "để thực hiện bước «{{ step_name }}». Hạn giải quyết bước này: {{ step_due_at|vn_time }}."
        + _FOOTER,
    ),
    "completed": (
        "Hồ sơ {{ code }} đã được giải quyết xong",
        "Kính gửi {{ full_name }},\n\n"
        "Hồ sơ {{ code }} — {{ procedure_name }} — đã được giải quyết xong lúc "
        "{{ completed_at|vn_time }}. Mời Ông/Bà nhận kết quả theo hình thức đã đăng ký." + _FOOTER,
    ),
}


# Compiled once: compiling a Jinja template costs far more than rendering it.
_COMPILED = {
    name: (_env.from_string(subject), _env.from_string(body))
    for name, (subject, body) in TEMPLATES.items()
}


@dataclass(frozen=True)
class Rendered:
    template: str
    subject: str
    body: str


def render(template: str, fields: dict[str, Any]) -> Rendered:
    subject, body = _COMPILED[template]
    return Rendered(template=template, subject=subject.render(fields), body=body.render(fields))
