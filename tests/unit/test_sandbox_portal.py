"""The national portal stand-in: one record per Idempotency-Key, failures on request."""

from fastapi import FastAPI
from fastapi.testclient import TestClient

from sandbox.portal import PortalStore, portal_router


def portal() -> TestClient:
    app = FastAPI()
    app.include_router(portal_router(PortalStore()))
    return TestClient(app)


def test_a_repeated_push_is_recorded_once() -> None:
    client = portal()
    fields = {"MaHoSo": "HS-1", "TrangThaiHoSo": 4}
    first = client.post("/portal/dossiers", json=fields, headers={"Idempotency-Key": "k-1"})
    again = client.post("/portal/dossiers", json=fields, headers={"Idempotency-Key": "k-1"})
    other = client.post(
        "/portal/dossiers", json={"MaHoSo": "HS-2"}, headers={"Idempotency-Key": "k-2"}
    )
    assert [first.status_code, again.status_code, other.status_code] == [201, 200, 201]
    assert again.json() == {"status": "duplicate"}
    [held] = client.get("/portal/dossiers", params={"dossier_code": "HS-1"}).json()
    assert (held["key"], held["fields"]) == ("k-1", fields)
    assert client.get("/portal/stats").json() == {"dossiers": 2, "pushes": 3, "rejected": 0}


def test_failing_on_request_records_nothing_and_a_key_is_required() -> None:
    client = portal()
    client.put("/portal/behaviour", json={"fail_next": 2, "fail_status": 502})
    statuses = [
        client.post(
            "/portal/dossiers", json={"MaHoSo": "HS-3"}, headers={"Idempotency-Key": "k"}
        ).status_code
        for _ in range(3)
    ]
    assert statuses == [502, 502, 201]
    assert client.post("/portal/dossiers", json={"MaHoSo": "HS-4"}).status_code == 422
    assert [d["key"] for d in client.get("/portal/dossiers").json()] == ["k"]
