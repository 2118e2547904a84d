"""algo-eod: one journal day's report, as JSON for tools and Markdown for people.

Run by algo-eod.timer after the close as a oneshot: no bus, no sd_notify, no metrics endpoint.
Writes ``<eod.reports>/<day>.json`` and ``<day>.md`` atomically, so a reader never sees half a
report. Exit codes: 0 written (a day without a journal gets an empty report and a warning),
65 (EX_DATAERR) a journal file it cannot trust, named with its line, 78 (EX_CONFIG) a bad config.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import date, datetime

import orjson

from ..journal_format.layout import day_dir
from ..runtime import checkpoint
from ..runtime.calendar import IST
from ..runtime.daemon import command_parser, start_command
from .report import ReportError, build_report, render_markdown

EX_DATAERR = 65

log = logging.getLogger("algo.eod")


def _day(text: str) -> date:
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None



def main(argv: Sequence[str] | None = None) -> None:
    """Console entry ``algo-eod [--config PATH] [--day YYYY-MM-DD]``."""
    parser = command_parser("algo-eod", __doc__.splitlines()[0])
    parser.add_argument("--day", type=_day, help="journal day, YYYY-MM-DD (default: today in IST)")
    args = parser.parse_args(argv)
    config = start_command("algo-eod", args)

    day = (args.day or datetime.now(IST).date()).isoformat()
    journal = day_dir(config.daemons.journal.directory, day)
    if not journal.is_dir():
        log.warning("no journal for %s (%s): writing an empty report", day, journal)
    try:
        report = build_report(journal, config.eod.product)
    except ReportError as exc:
        log.error("cannot build the report for %s: %s", day, exc)
        sys.exit(EX_DATAERR)

    reports = config.eod.reports
    reports.mkdir(parents=True, exist_ok=True)
    json_path, md_path = reports / f"{day}.json", reports / f"{day}.md"
    checkpoint.write_bytes(json_path, orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")  # old or new, never half
    checkpoint.write_bytes(md_path, render_markdown(report).encode())
    log.info("report for %s: net P&L %.2f; %s, %s", day, report["totals"]["net_pnl"], json_path, md_path)
