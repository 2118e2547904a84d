from collections.abc import Callable
from typing import Any

class _Factory:
    initialDelay: float
    delay: float
    factor: float
    maxDelay: float
    maxRetries: int | None
    def stopTrying(self) -> None: ...
    def resetDelay(self) -> None: ...

class KiteTicker:
    MODE_FULL: str
    MODE_QUOTE: str
    MODE_LTP: str
    factory: _Factory
    ws: Any  # the autobahn protocol of the open connection, None while down
    subscribed_tokens: dict[int, str]
    on_ticks: Callable[[KiteTicker, list[dict[str, Any]]], object] | None
    on_open: Callable[[KiteTicker], object] | None
    on_close: Callable[[KiteTicker, int | None, str | None], object] | None
    on_error: Callable[[KiteTicker, int | None, Any], object] | None
    on_connect: Callable[[KiteTicker, Any], object] | None
    on_message: Callable[[KiteTicker, bytes, bool], object] | None
    on_reconnect: Callable[[KiteTicker, int], object] | None
    on_noreconnect: Callable[[KiteTicker], object] | None
    on_order_update: Callable[[KiteTicker, dict[str, Any]], object] | None
    def __init__(
        self,
        api_key: str,
        access_token: str,
        debug: bool = False,
        root: str | None = None,
        reconnect: bool = True,
        reconnect_max_tries: int = 50,
        reconnect_max_delay: int = 60,
        connect_timeout: int = 30,
    ) -> None: ...
    def connect(self, threaded: bool = False, disable_ssl_verification: bool = False, proxy: str | None = None) -> None: ...
    def is_connected(self) -> bool: ...
    def close(self, code: int | None = None, reason: str | None = None) -> None: ...
    def stop(self) -> None: ...
    def stop_retry(self) -> None: ...
    def subscribe(self, instrument_tokens: list[int]) -> bool: ...
    def unsubscribe(self, instrument_tokens: list[int]) -> bool: ...
    def set_mode(self, mode: str, instrument_tokens: list[int]) -> bool: ...
    def resubscribe(self) -> None: ...
    def _parse_binary(self, bin: bytes) -> list[dict[str, Any]]: ...
    def _split_packets(self, bin: bytes) -> list[bytes]: ...
