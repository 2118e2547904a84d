from collections.abc import Callable
from datetime import datetime
from typing import Any

class KiteConnect:
    VARIETY_REGULAR: str
    PRODUCT_MIS: str
    PRODUCT_CNC: str
    PRODUCT_NRML: str
    ORDER_TYPE_MARKET: str
    ORDER_TYPE_LIMIT: str
    TRANSACTION_TYPE_BUY: str
    TRANSACTION_TYPE_SELL: str
    api_key: str
    access_token: str | None
    root: str
    timeout: float
    def __init__(
        self,
        api_key: str,
        access_token: str | None = None,
        root: str | None = None,
        debug: bool = False,
        timeout: float | None = None,
        proxies: dict[str, str] | None = None,
        pool: dict[str, Any] | None = None,
        disable_ssl: bool = False,
    ) -> None: ...
    def set_access_token(self, access_token: str) -> None: ...
    def set_session_expiry_hook(self, method: Callable[[], object]) -> None: ...
    def login_url(self) -> str: ...
    def generate_session(self, request_token: str, api_secret: str) -> dict[str, Any]: ...
    def invalidate_access_token(self, access_token: str | None = None) -> Any: ...
    def profile(self) -> dict[str, Any]: ...
    def margins(self, segment: str | None = None) -> dict[str, Any]: ...
    def order_margins(self, params: list[dict[str, Any]]) -> list[dict[str, Any]]: ...
    def holdings(self) -> list[dict[str, Any]]: ...
    def positions(self) -> dict[str, list[dict[str, Any]]]: ...
    def orders(self) -> list[dict[str, Any]]: ...
    def order_history(self, order_id: str) -> list[dict[str, Any]]: ...
    def trades(self) -> list[dict[str, Any]]: ...
    def order_trades(self, order_id: str) -> list[dict[str, Any]]: ...
    def place_order(
        self,
        variety: str,
        exchange: str,
        tradingsymbol: str,
        transaction_type: str,
        quantity: int,
        product: str,
        order_type: str,
        price: float | None = None,
        validity: str | None = None,
        validity_ttl: int | None = None,
        disclosed_quantity: int | None = None,
        trigger_price: float | None = None,
        iceberg_legs: int | None = None,
        iceberg_quantity: int | None = None,
        auction_number: str | None = None,
        algo_id: str | None = None,
        tag: str | None = None,
        market_protection: float | None = None,
    ) -> str: ...
    def modify_order(
        self,
        variety: str,
        order_id: str,
        parent_order_id: str | None = None,
        quantity: int | None = None,
        price: float | None = None,
        order_type: str | None = None,
        trigger_price: float | None = None,
        validity: str | None = None,
        disclosed_quantity: int | None = None,
        market_protection: float | None = None,
    ) -> str: ...
    def cancel_order(self, variety: str, order_id: str, parent_order_id: str | None = None) -> str: ...
    def instruments(self, exchange: str | None = None) -> list[dict[str, Any]]: ...
    def quote(self, *instruments: str | int | list[str]) -> dict[str, Any]: ...
    def ohlc(self, *instruments: str | int | list[str]) -> dict[str, Any]: ...
    def ltp(self, *instruments: str | int | list[str]) -> dict[str, Any]: ...
    def historical_data(
        self,
        instrument_token: int,
        from_date: datetime | str,
        to_date: datetime | str,
        interval: str,
        continuous: bool = False,
        oi: bool = False,
    ) -> list[dict[str, Any]]: ...
    def _get(self, route: str, url_args: dict[str, str] | None = None, params: dict[str, Any] | None = None,
             is_json: bool = False) -> Any: ...
    def _parse_instruments(self, data: bytes | str) -> list[dict[str, Any]]: ...
