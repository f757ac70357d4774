from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from gateway.v1 import dossier_pb2, events_pb2
from services.routing.portal import portal_date, portal_fields, push_key


def stamp(value: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(value)
    return result


def change(status: int, changed_at: datetime) -> events_pb2.DossierStatusChanged:
    return events_pb2.DossierStatusChanged(
        dossier_code="000.00.01.H22-261120-0007",
        procedure_code="LT.KS-TT-BHYT",
        status=status,  # type: ignore[arg-type]
        agency_code="000.22.31.H22",
        changed_at=stamp(changed_at),
        # 23:30 UTC on the 20th is 06:30 on the 21st in Hà Nội.
        received_at=stamp(datetime(2026, 11, 20, 23, 30, 5, tzinfo=UTC)),
        due_at=stamp(datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)),
    )


def test_dates_are_yyyymmddhhmmss_in_vietnam_time() -> None:
    assert portal_date(stamp(datetime(2026, 12, 31, 17, 0, 0, tzinfo=UTC))) == "20270101000000"
    assert portal_date(Timestamp()) == ""


def test_the_portal_gets_its_fields() -> None:
    fields = portal_fields(
        change(dossier_pb2.DOSSIER_STATUS_PROCESSING, datetime(2026, 11, 21, 2, 0, tzinfo=UTC))
    )
    assert fields == {
        "MaHoSo": "000.00.01.H22-261120-0007",
        "MaTTHC": "LT.KS-TT-BHYT",
        "TrangThaiHoSo": 4,
        "NgayTiepNhan": "20261121063005",
        "NgayHenTra": "20261127170000",
        "NgayKetThucXuLy": "",
        "DonViXuLy": "000.22.31.H22",
        "NgayCapNhat": "20261121090000",
        "LyDo": "",
    }


def test_the_key_is_stable_per_change_and_differs_between_changes() -> None:
    at = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
    processing = change(dossier_pb2.DOSSIER_STATUS_PROCESSING, at)
    assert push_key(processing) == push_key(change(dossier_pb2.DOSSIER_STATUS_PROCESSING, at))
    assert push_key(processing) != push_key(change(dossier_pb2.DOSSIER_STATUS_DECIDED, at))
    later = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    # Back to processing after a supplement: another change, another push.
    assert push_key(processing) != push_key(change(dossier_pb2.DOSSIER_STATUS_PROCESSING, later))
