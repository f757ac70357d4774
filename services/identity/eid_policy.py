"""What the e-ID adapter is told about a provider rather than assumes: which claim carries
the personal ID, which `acr` means which assurance level, what to ask for as `acr_values`,
and how the client authenticates at the token endpoint."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from core.personal_id import InvalidPersonalId, PersonalId, validate_personal_id


class EidError(Exception):
    """The login cannot be trusted; the message says why and never echoes personal data."""


EIDAS_LOA = "http://eidas.europa.eu/LoA/"
# VNeID levels as the sandbox and VNeID spell them, and the eIDAS levels of assurance
# (Regulation 2015/1502): "substantial" and "high" both need the identity proven in person
# or equivalently, which is what VNeID level 2 means; "low" is an online account.
DEFAULT_ACR_LEVELS: Final[Mapping[str, int]] = {
    "1": 1,
    "2": 2,
    "level1": 1,
    "level2": 2,
    EIDAS_LOA + "low": 1,
    EIDAS_LOA + "substantial": 2,
    EIDAS_LOA + "high": 2,
}
# What `/v1/citizen/login?acr=<level>` asks the provider for (space-separated acr_values).
DEFAULT_ACR_VALUES: Final[Mapping[int, str]] = {1: "1", 2: "2"}
ASSURANCE_LEVELS = frozenset({1, 2})
TOKEN_AUTH_METHODS = frozenset({"client_secret_basic", "client_secret_post", "private_key_jwt"})


def check_acr_levels(levels: Mapping[str, int]) -> None:
    wrong = sorted(acr for acr, level in levels.items() if level not in ASSURANCE_LEVELS)
    if wrong:
        raise ValueError(f"acr values {wrong} map to no assurance level (1 or 2)")


def check_acr_values(values: Mapping[int, str]) -> None:
    wrong = sorted(level for level in values if level not in ASSURANCE_LEVELS)
    if wrong:
        raise ValueError(f"acr_values configured for unknown assurance levels {wrong}")


def assurance_level(acr: object, levels: Mapping[str, int]) -> int:
    """The level the configured mapping gives `acr`. A token without `acr` is level 1 (the
    provider vouches for nothing more); an `acr` the mapping does not know is refused, never
    read as level 1, so a misconfiguration shows at the first login instead of silently
    downgrading every citizen."""
    if acr is None:
        return 1
    value = str(acr) if isinstance(acr, str | int) and not isinstance(acr, bool) else None
    level = levels.get(value) if value is not None else None
    if level is None:
        shown = value[:100] if value is not None else type(acr).__name__
        raise EidError(f"the provider's acr {shown!r} maps to no assurance level (EID_ACR_LEVELS)")
    return level


def claim_at(claims: Mapping[str, Any], path: str) -> object:
    """The claim named `path`: a top-level name as is (claim names may be URIs with dots),
    else a dotted path into nested objects, e.g. `eid.personal_id`. None when absent."""
    if path in claims:
        return claims[path]
    found: object = claims
    for part in path.split("."):
        if not isinstance(found, Mapping) or part not in found:
            return None
        found = found[part]
    return found


def personal_id_from(claim: str, *sources: Mapping[str, Any]) -> PersonalId:
    """The personal ID in `claim` of the first source that carries it (the verified ID
    token, then userinfo about the same subject). Only a string: a number would have lost
    the leading zeros of the province code."""
    for source in sources:
        value = claim_at(source, claim)
        if value is None:
            continue
        if not isinstance(value, str):
            raise EidError(f"the claim {claim!r} is not a string personal ID")
        try:
            return validate_personal_id(value)
        except InvalidPersonalId as exc:
            raise EidError(f"the claim {claim!r} is not a personal ID: {exc}") from None
    raise EidError(f"the provider sent no {claim!r} claim (EID_PERSONAL_ID_CLAIM)")


def basic_credentials(client_id: str, client_secret: str) -> str:
    """The client_secret_basic header value: RFC 6749 §2.3.1 form-encodes id and secret
    before base64, so a secret with `:`, `+` or `%` reaches the provider unchanged."""
    pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def encode_client_secret_basic(
    client: Any, method: str, uri: str, headers: dict[str, str], body: str
) -> tuple[str, dict[str, str], str]:
    """authlib's client auth hook (it sends id and secret raw, which breaks such secrets)."""
    headers["Authorization"] = basic_credentials(client.client_id, client.client_secret or "")
    return uri, headers, body
