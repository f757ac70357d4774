from datetime import UTC, datetime, timedelta

import pytest

from core.signing import SignatureError, new_secret, signature_headers, verify_signature

BODY = '{"transfer_id": "t-1", "dossier": "Nguyễn Văn A"}'.encode()


def test_a_signed_body_verifies_with_the_same_secret() -> None:
    secret = new_secret()
    headers = signature_headers(secret, "t-1", BODY)
    verify_signature(secret, BODY, headers)
    assert headers["webhook-id"] == "t-1"
    assert headers["webhook-signature"].startswith("v1,")


def test_another_secret_an_altered_body_or_no_headers_are_refused() -> None:
    secret = new_secret()
    headers = signature_headers(secret, "t-1", BODY)
    with pytest.raises(SignatureError):
        verify_signature(new_secret(), BODY, headers)
    with pytest.raises(SignatureError):
        verify_signature(secret, BODY.replace(b"t-1", b"t-2"), headers)
    with pytest.raises(SignatureError):
        verify_signature(secret, BODY, {})


def test_an_old_signature_cannot_be_replayed() -> None:
    secret = new_secret()
    headers = signature_headers(secret, "t-1", BODY, at=datetime.now(UTC) - timedelta(minutes=6))
    with pytest.raises(SignatureError, match="too old"):
        verify_signature(secret, BODY, headers)


def test_a_malformed_signature_header_is_a_signature_error() -> None:
    secret = new_secret()
    headers = signature_headers(secret, "t-1", BODY) | {"webhook-signature": "garbage"}
    with pytest.raises(SignatureError):
        verify_signature(secret, BODY, headers)
