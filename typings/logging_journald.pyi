import logging
from pathlib import Path
from typing import Any

def check_journal_stream() -> bool: ...

class JournaldLogHandler(logging.Handler):
    use_message_id: bool
    def __init__(
        self,
        identifier: str | None = None,
        facility: int = ...,
        use_message_id: bool = True,
        socket_path: str | Path | None = None,
    ) -> None: ...
    def _format_record(self, record: logging.LogRecord) -> list[tuple[str, Any]]: ...
    def emit(self, record: logging.LogRecord) -> None: ...
