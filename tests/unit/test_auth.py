"""core.auth: what an access token must be for a service to accept it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from joserfc.jwk import RSAKey

from core.auth import InvalidToken, KeysUnavailable, TokenVerifier
from services.identity.keys import SigningKeys, generate_key
from tests.support.tokens import AUDIENCE, ISSUER, TestIssuer

AGENCY = "000.21.31.H22"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Jwks:
    """identity's /.well-known/jwks.json, counting how often it is fetched."""

    def __init__(self, keys: SigningKeys) -> None:
        self.keys = keys
        self.fetches = 0

    async def __call__(self) -> dict[str, Any]:
        self.fetches += 1
        return self.keys.public_jwks()


def verifier_of(fetch: Jwks, clock: Clock, **options: Any) -> TokenVerifier:
    return TokenVerifier(issuer=ISSUER, audience=AUDIENCE, fetch=fetch, clock=clock, **options)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"


def claims_of(issuer: TestIssuer) -> dict[str, Any]:
    token = issuer.token(AGENCY, "transfers:report")
    return dict(json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "==")))


@pytest.fixture
def issuer() -> TestIssuer:
    return TestIssuer()


@pytest.fixture
def static(issuer: TestIssuer) -> TokenVerifier:
    return TokenVerifier(issuer=ISSUER, audience=AUDIENCE, static_jwks=issuer.jwks)


async def test_a_valid_token_names_the_client_its_agency_and_scopes(
    issuer: TestIssuer, static: TokenVerifier
) -> None:
    principal = await static.verify(issuer.token(AGENCY, "transfers:report dossiers:read"))
    assert principal.agency_code == AGENCY
    assert principal.client_id == f"client-of-{AGENCY}"
    assert principal.scopes == {"transfers:report", "dossiers:read"}


async def test_forged_signature_is_refused(issuer: TestIssuer, static: TokenVerifier) -> None:
    # Same kid as the real key, signed by another: the signature cannot match.
    other = RSAKey.generate_key(2048, {"kid": issuer.key.kid or ""})
    assert other.kid == issuer.key.kid
    with pytest.raises(InvalidToken):
        await static.verify(issuer.token(AGENCY, "transfers:report", key=other))
    genuine = issuer.token(AGENCY, "transfers:report").split(".")
    tampered = claims_of(issuer) | {"agency": "000.22.31.H22"}
    with pytest.raises(InvalidToken):
        await static.verify(f"{genuine[0]}.{b64(json.dumps(tampered).encode())}.{genuine[2]}")


async def test_alg_none_is_refused(issuer: TestIssuer, static: TokenVerifier) -> None:
    token = unsigned({"alg": "none", "kid": issuer.key.kid}, claims_of(issuer)) + "."
    with pytest.raises(InvalidToken, match="algorithm"):
        await static.verify(token)


async def test_hs256_signed_with_the_public_key_is_refused(
    issuer: TestIssuer, static: TokenVerifier
) -> None:
    # The classic confusion: an HMAC "signed" with the verifier's own public key.
    public_pem = issuer.key.as_pem(private=False)
    signing_input = unsigned({"alg": "HS256", "kid": issuer.key.kid}, claims_of(issuer))
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidToken, match="algorithm"):
        await static.verify(f"{signing_input}.{b64(mac)}")


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        # Times relative to when the test runs (not when it was collected: a long session
        # would otherwise reach the "future" nbf before this test).
        (lambda now: {"exp": now - 120}, "expired"),
        (lambda now: {"aud": "someone-else"}, "wrong audience"),
        (lambda now: {"iss": "https://evil.example"}, "wrong issuer"),
        (lambda now: {"nbf": now + 600}, "not valid yet"),
    ],
)
async def test_claims_are_checked(
    issuer: TestIssuer,
    static: TokenVerifier,
    claims: Callable[[int], dict[str, Any]],
    why: str,
) -> None:
    with pytest.raises(InvalidToken):
        await static.verify(issuer.token(AGENCY, "transfers:report", **claims(int(time.time()))))


async def test_small_clock_skew_is_tolerated(issuer: TestIssuer, static: TokenVerifier) -> None:
    token = issuer.token(AGENCY, "transfers:report", exp=int(time.time()) - 5)
    assert (await static.verify(token)).agency_code == AGENCY


async def test_garbage_is_invalid_not_a_crash(static: TokenVerifier) -> None:
    for junk in ("", "abc", "a.b.c", "éé.ü.x"):
        with pytest.raises(InvalidToken):
            await static.verify(junk)


def sign(key: RSAKey, **claims: Any) -> str:
    issuer = TestIssuer()
    issuer.key = key
    return issuer.token(AGENCY, "transfers:report", **claims)


async def test_unknown_kid_refetches_the_jwks_once() -> None:
    keys, clock = SigningKeys(generate_key(), grace_s=600), Clock()
    jwks = Jwks(keys)
    verifier = verifier_of(jwks, clock)
    await verifier.verify(sign(keys.current))
    assert jwks.fetches == 1
    await verifier.verify(sign(keys.current))
    assert jwks.fetches == 1  # cached: no network per request

    clock.now += 10
    keys.rotate()
    assert (await verifier.verify(sign(keys.current))).agency_code == AGENCY
    assert jwks.fetches == 2

    # A kid nobody published: refetch at most once per few seconds.
    stranger = generate_key()
    with pytest.raises(InvalidToken, match="unknown key"):
        await verifier.verify(sign(stranger))
    assert jwks.fetches == 2


async def test_a_rotated_out_key_is_refused_after_its_grace() -> None:
    clock = Clock()
    keys = SigningKeys(generate_key(), grace_s=600, clock=clock)
    verifier = verifier_of(Jwks(keys), clock, refresh_s=300)
    old = keys.current
    await verifier.verify(sign(old))
    keys.rotate()
    clock.now += 301  # within the grace: the old key is still published
    assert (await verifier.verify(sign(old))).agency_code == AGENCY
    clock.now += 600  # after it
    with pytest.raises(InvalidToken, match="unknown key"):
        await verifier.verify(sign(old))
    assert (await verifier.verify(sign(keys.current))).agency_code == AGENCY


async def test_identity_unreachable_at_first_is_unavailable_not_invalid(
    issuer: TestIssuer,
) -> None:
    async def down() -> dict[str, Any]:
        raise TimeoutError

    verifier = TokenVerifier(issuer=ISSUER, audience=AUDIENCE, fetch=down)
    with pytest.raises(KeysUnavailable):
        await verifier.verify(issuer.token(AGENCY, "transfers:report"))


async def test_a_token_verified_before_is_refused_once_expired(
    issuer: TestIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = TokenVerifier(issuer=ISSUER, audience=AUDIENCE, static_jwks=issuer.jwks, leeway_s=30)
    start = time.time()
    token = issuer.token(AGENCY, "transfers:report", exp=int(start) + 60)
    assert (await verifier.verify(token)).agency_code == AGENCY
    monkeypatch.setattr(time, "time", lambda: start + 60 + 29)
    assert (await verifier.verify(token)).agency_code == AGENCY  # within the leeway
    monkeypatch.setattr(time, "time", lambda: start + 60 + 31)
    with pytest.raises(InvalidToken):
        await verifier.verify(token)


async def test_a_token_verified_before_goes_with_its_withdrawn_key() -> None:
    clock = Clock()
    keys = SigningKeys(generate_key(), grace_s=600, clock=clock)
    verifier = verifier_of(Jwks(keys), clock, refresh_s=300)
    token = sign(keys.current)
    await verifier.verify(token)
    keys.rotate()
    clock.now += 901  # the old key's grace is over and the JWKS is due a refresh
    with pytest.raises(InvalidToken, match="unknown key"):
        await verifier.verify(token)


async def test_remembered_tokens_are_bounded(issuer: TestIssuer) -> None:
    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, static_jwks=issuer.jwks, remembered=2
    )
    tokens = [
        issuer.token(AGENCY, "transfers:report", exp=int(time.time()) + n) for n in (60, 61, 62)
    ]
    for token in tokens:
        await verifier.verify(token)
    assert len(verifier._verified) == 2
    assert set(verifier._verified) == set(tokens[1:])
    for token in tokens:  # each still verifies, from memory or again
        assert (await verifier.verify(token)).agency_code == AGENCY
