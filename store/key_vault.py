"""認証キー values at rest: encrypted with Fernet under the deployment's key-encryption key."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from foundation.errors import UserFacingError


class KeyVaultError(UserFacingError):
    """The key-encryption key is malformed or is not the one the stored keys were encrypted with."""


class KeyVault:
    def __init__(self, key_encryption_key: str) -> None:
        try:
            self._fernet = Fernet(key_encryption_key.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise KeyVaultError(
                "the key-encryption key is not a Fernet key (44 characters of URL-safe base64)"
            ) from None

    @staticmethod
    def new_key() -> str:
        return Fernet.generate_key().decode("ascii")

    def encrypt(self, access_key: str) -> bytes:
        return self._fernet.encrypt(access_key.encode("utf-8"))

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(token).decode("utf-8")
        except InvalidToken:
            raise KeyVaultError("cannot decrypt: the key-encryption key differs from the one used to encrypt") from None
