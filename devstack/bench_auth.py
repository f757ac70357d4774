"""What checking an access token costs a service per request: `python -m devstack.bench_auth`
(`make bench` prints it in its header).

A cached-key RS256 signature check plus the claims, as core.auth does on every call.
"""

from __future__ import annotations

import asyncio
import secrets
import time

from joserfc import jwt

from core.auth import TokenVerifier
from services.identity.keys import SigningKeys, generate_key

ISSUER, AUDIENCE = "http://127.0.0.1:8083", "dossier-gateway"


async def measure(rounds: int) -> float:
    keys = SigningKeys(generate_key())
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "motcua-h22",
        "agency": "000.00.01.H22",
        "aud": AUDIENCE,
        "scope": "dossiers:submit dossiers:read",
        "iat": now,
        "exp": now + 300,
        "jti": secrets.token_urlsafe(16),
    }
    header = {"alg": "RS256", "typ": "at+jwt", "kid": keys.current.kid or ""}
    token = jwt.encode(header, claims, keys.current)
    verifier = TokenVerifier(issuer=ISSUER, audience=AUDIENCE, static_jwks=keys.public_jwks())
    for _ in range(200):
        await verifier.verify(token)
    # CPU time, not wall time: on a shared machine the wall clock also counts other work.
    began = time.process_time()
    for _ in range(rounds):
        await verifier.verify(token)
    return (time.process_time() - began) / rounds * 1e6


def main() -> None:
    rounds = 5000
    micros = asyncio.run(measure(rounds))
    print(
        f"access token verification: {micros:.0f} µs of CPU each "
        f"({rounds} rounds, RS256, cached key)"
    )


if __name__ == "__main__":
    main()
