"""Registry data kept at rest in consent rows, sealed.

A consent's preview is exactly what the citizen agreed to attach: their personal ID, name,
birth date, addresses and their household's members with *their* personal IDs. Rows hold it
encrypted, as a JWE (`dir`, A256GCM, joserfc), under a key derived from the pseudonym key
(HMAC-SHA256 with a label: one secret to keep, a separate key per use). The consent id is
sealed inside and checked on opening, so a sealed preview cannot be moved to another row.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

LABEL = b"identity consent residence v1"
HEADER = {"alg": "dir", "enc": "A256GCM"}


class SealBroken(ValueError):
    """The sealed value was not made by this key for this consent."""


class ResidenceSeal:
    def __init__(self, pseudonym_key: bytes) -> None:
        self._key = OctKey.import_key(hmac.new(pseudonym_key, LABEL, hashlib.sha256).digest())

    def seal(self, consent_id: str, residence: dict[str, Any]) -> str:
        plaintext = json.dumps({"consent": consent_id, "residence": residence}).encode()
        return jwe.encrypt_compact(HEADER, plaintext, self._key)

    def open(self, consent_id: str, sealed: str) -> dict[str, Any]:
        try:
            content = json.loads(jwe.decrypt_compact(sealed, self._key).plaintext or b"{}")
        except (JoseError, ValueError) as exc:
            raise SealBroken(f"consent {consent_id}: {exc}") from None
        if not isinstance(content, dict) or content.get("consent") != consent_id:
            raise SealBroken(f"consent {consent_id}: sealed for another consent")
        residence: dict[str, Any] = content["residence"]
        return residence
