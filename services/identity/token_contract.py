"""The token endpoint's contract in the OpenAPI document: its form, its answers, its errors."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    scope: str = Field(default="", description="The scopes granted, space-separated")


class OAuthErrorOut(BaseModel):
    """RFC 6749 §5.2: the token endpoint's errors are OAuth's, not problem documents."""

    error: str
    error_description: str | None = None


# The token request is read by hand (authlib's own form handling), so its form is declared.
TOKEN_REQUEST: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "title": "TokenRequest",
                    "type": "object",
                    "required": ["grant_type"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["client_credentials"]},
                        "scope": {"type": "string", "description": "Scopes, space-separated"},
                        "client_id": {"type": "string"},
                        "client_secret": {"type": "string"},
                        "client_assertion_type": {"type": "string"},
                        "client_assertion": {"type": "string"},
                    },
                }
            }
        },
    },
    # client_secret_basic, or client_secret_post / private_key_jwt in the form.
    "security": [{"clientSecretBasic": []}, {}],
}
CLIENT_SCHEME = {"clientSecretBasic": {"type": "http", "scheme": "basic"}}


def oauth_error(description: str) -> dict[str, Any]:
    return {"model": OAuthErrorOut, "description": description}
