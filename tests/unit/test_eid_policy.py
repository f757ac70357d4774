"""What the e-ID adapter is configured with: the personal-ID claim path, the acr map, the
acr_values asked for, the token endpoint's client authentication, from EID_* variables."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import unquote_plus

import pytest

from services.identity.eid import EidClient
from services.identity.eid_policy import (
    DEFAULT_ACR_LEVELS,
    EidError,
    assurance_level,
    basic_credentials,
    claim_at,
    encode_client_secret_basic,
    personal_id_from,
)
from services.identity.main import eid_client
from services.identity.settings import IdentitySettings

CITIZEN = "001090012345"
CALLBACK = "http://127.0.0.1:9/v1/citizen/callback"


@pytest.mark.parametrize(
    ("claims", "path", "found"),
    [
        ({"sub": CITIZEN}, "sub", CITIZEN),
        ({"eid": {"personal_id": CITIZEN}}, "eid.personal_id", CITIZEN),
        ({"a": {"b": {"c": CITIZEN}}}, "a.b.c", CITIZEN),
        # A claim named by a URI with dots is taken whole before it is read as a path.
        ({"https://vneid.gov.vn/cccd": CITIZEN}, "https://vneid.gov.vn/cccd", CITIZEN),
        ({"eid": {"other": 1}}, "eid.personal_id", None),
        ({"eid": "flat"}, "eid.personal_id", None),
        ({}, "sub", None),
    ],
)
def test_claim_paths(claims: dict[str, Any], path: str, found: object) -> None:
    assert claim_at(claims, path) == found


def test_the_personal_id_comes_from_the_configured_claim() -> None:
    token = {"sub": "pairwise-7f3a9c", "eid": {"personal_id": CITIZEN}}
    assert personal_id_from("eid.personal_id", token).value == CITIZEN
    # Not in the token: userinfo (about the same subject) may carry it.
    assert personal_id_from("cccd", {"sub": "x"}, {"cccd": CITIZEN}).value == CITIZEN
    # An opaque subject is not a personal ID: with the default claim the login is refused.
    with pytest.raises(EidError, match="'sub' is not a personal ID"):
        personal_id_from("sub", token)
    with pytest.raises(EidError, match="no 'cccd' claim"):
        personal_id_from("cccd", token)
    # A number has lost the leading zeros of the province code.
    with pytest.raises(EidError, match="not a string"):
        personal_id_from("n", {"n": 1090012345})


@pytest.mark.parametrize(
    ("acr", "level"),
    [
        ("1", 1),
        ("2", 2),
        ("level2", 2),
        ("http://eidas.europa.eu/LoA/low", 1),
        ("http://eidas.europa.eu/LoA/substantial", 2),
        ("http://eidas.europa.eu/LoA/high", 2),
        (2, 2),
        # No acr: the provider vouches for nothing beyond an account.
        (None, 1),
    ],
)
def test_default_acr_map(acr: object, level: int) -> None:
    assert assurance_level(acr, DEFAULT_ACR_LEVELS) == level


@pytest.mark.parametrize("acr", ["urn:vneid:loa:2", "3", "", True, ["2"]])
def test_an_acr_nobody_mapped_is_refused_not_downgraded(acr: object) -> None:
    with pytest.raises(EidError, match="maps to no assurance level"):
        assurance_level(acr, DEFAULT_ACR_LEVELS)


@pytest.mark.parametrize(
    ("client_id", "secret"),
    [("dossier-gateway", "p+q%41:r/= ü"), ("urn:gov.vn:gateway", "a:b"), ("g", "%%++::")],
)
def test_basic_credentials_are_form_encoded_before_base64(client_id: str, secret: str) -> None:
    header = basic_credentials(client_id, secret)
    assert header.startswith("Basic ")
    decoded = base64.b64decode(header.removeprefix("Basic ")).decode()
    # RFC 6749 §2.3.1: exactly one raw colon, and form-decoding gives both back unchanged.
    encoded_id, encoded_secret = decoded.split(":")
    assert (unquote_plus(encoded_id), unquote_plus(encoded_secret)) == (client_id, secret)

    class Client:
        client_id = "urn:x"
        client_secret = "s+%"

    _, headers, _ = encode_client_secret_basic(Client(), "POST", "https://p/token", {}, "")
    assert headers["Authorization"] == basic_credentials("urn:x", "s+%")


def test_eid_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EID_PERSONAL_ID_CLAIM", "eid.personal_id")
    monkeypatch.setenv(
        "EID_ACR_LEVELS", '{"http://eidas.europa.eu/LoA/substantial": 2, "basic": 1}'
    )
    monkeypatch.setenv("EID_ACR_VALUES", '{"2": "http://eidas.europa.eu/LoA/substantial"}')
    monkeypatch.setenv("EID_TOKEN_AUTH_METHOD", "client_secret_post")
    monkeypatch.setenv("EID_CLIENT_SECRET", "p+q%41:r")
    monkeypatch.setenv("EID_JWKS_MAX_AGE_S", "60")
    monkeypatch.setenv("EID_JWKS_REFETCH_INTERVAL_S", "5")
    client = eid_client(IdentitySettings())
    assert client.personal_id_claim == "eid.personal_id"
    # The configured map replaces the default one: "2" is no longer known.
    assert dict(client.acr_levels) == {"http://eidas.europa.eu/LoA/substantial": 2, "basic": 1}
    assert dict(client.acr_values) == {2: "http://eidas.europa.eu/LoA/substantial"}
    assert (client.auth_method, client.client_secret) == ("client_secret_post", "p+q%41:r")
    assert (client.jwks_max_age_s, client.jwks_refetch_interval_s) == (60, 5)


def test_eid_defaults() -> None:
    client = eid_client(IdentitySettings())
    assert client.personal_id_claim == "sub"
    assert dict(client.acr_levels) == dict(DEFAULT_ACR_LEVELS)
    assert dict(client.acr_values) == {1: "1", 2: "2"}
    assert client.auth_method == "client_secret_basic"
    key = {"kty": "RSA"}
    assert EidClient("https://p", "c", CALLBACK, private_key=key).auth_method == "private_key_jwt"


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("EID_ACR_LEVELS", '{"http://eidas.europa.eu/LoA/high": 3}', "no assurance level"),
        ("EID_ACR_VALUES", '{"3": "gold"}', "unknown assurance levels"),
        ("EID_TOKEN_AUTH_METHOD", "private_key_jwt", "needs the client's private JWK"),
        ("EID_PERSONAL_ID_CLAIM", " ", "must be named"),
    ],
)
def test_wrong_eid_settings_stop_the_start(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, reason: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit, match=reason):
        eid_client(IdentitySettings())
