"""Identity's token-signing keys: the current one signs, retired ones stay published.

RS256: verifying it costs every service a fraction of what ES256 does, and verification is
on the hot path of every request while signing happens once per token lifetime. A rotation
keeps the previous key in the JWKS for a grace period (longer than a token lives), so tokens
signed just before it still verify; after the grace it is gone and they are refused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from joserfc.jwk import KeyParameters, RSAKey

log = logging.getLogger(__name__)
ALGORITHM = "RS256"
_PARAMS: KeyParameters = {"use": "sig", "alg": ALGORITHM}


def generate_key() -> RSAKey:
    return RSAKey.generate_key(2048, _PARAMS, auto_kid=True)


def import_key(pem: str | bytes) -> RSAKey:
    key = RSAKey.import_key(pem, _PARAMS)
    key.ensure_kid()
    return key


class SigningKeys:
    def __init__(
        self,
        current: RSAKey,
        retired: list[RSAKey] | None = None,
        *,
        grace_s: float = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.current = current
        self._grace_s = grace_s
        self._clock = clock
        # Configured retired keys have no end: the operator removes them from the settings.
        self._retired: list[tuple[RSAKey, float]] = [(k, float("inf")) for k in retired or []]

    def rotate(self, new: RSAKey | None = None) -> None:
        self._retired.append((self.current, self._clock() + self._grace_s))
        self.current = new or generate_key()

    def public_jwks(self) -> dict[str, Any]:
        now = self._clock()
        self._retired = [(key, until) for key, until in self._retired if until > now]
        keys = [self.current, *(key for key, _ in self._retired)]
        return {"keys": [key.as_dict(private=False) for key in keys]}


def load_signing_keys(
    pem: str, path: str, retired_path: str, *, required: bool, grace_s: float
) -> SigningKeys:
    """From settings (a PEM, or a file); generated for local runs when neither is given."""
    if pem or path:
        current = import_key(pem or Path(path).read_bytes())
    elif required:
        raise RuntimeError(
            "TOKEN_SIGNING_KEY or TOKEN_SIGNING_KEY_FILE must be set: replicas must share a key"
        )
    else:
        log.warning(
            "no token signing key configured: generated one for this process only; "
            "tokens will not survive a restart and replicas would not agree"
        )
        current = generate_key()
    retired = [import_key(Path(retired_path).read_bytes())] if retired_path else []
    return SigningKeys(current, retired, grace_s=grace_s)
