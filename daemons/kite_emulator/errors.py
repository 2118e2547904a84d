"""Refusals in Kite's terms: the REST layer turns them into the error envelope the client maps to
its exception classes (``error_type`` names the class, the HTTP status becomes ``.code``)."""

from __future__ import annotations


class KiteError(Exception):
    """``error_type`` is a kiteconnect exception class name; ``status`` the HTTP status."""

    def __init__(self, error_type: str, message: str, status: int) -> None:
        super().__init__(message)
        self.error_type, self.message, self.status = error_type, message, status


def input_error(message: str) -> KiteError:
    return KiteError("InputException", message, 400)
