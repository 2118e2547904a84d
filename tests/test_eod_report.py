"""algo-eod on real journal files: small days written to tmp_path the way the journal writes them."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemons.eod.charges import Charges, order_charges
from daemons.eod.main import main
from daemons.eod.report import ReportError, build_report, render_markdown
from daemons.journal_format.layout import COLUMNS, EVENTS

DAY = "2025-01-02"
_ids = itertools.count(1)


def fill(strategy: str, symbol: str, side: str, quantity: int, price: float, **extra: Any) -> dict[str, Any]:
    """A fills.csv row; each fill is its own order unless ``order_id`` says otherwise."""
    n = next(_ids)
    row = {"ts": f"{DAY}T10:00:00.000000+05:30", "exchange_time": f"{DAY}T10:00:00+05:30", "fill_id": f"F{n}",
           "order_id": f"O{n}", "client_id": f"C{n}", "engine": "equity", "strategy": strategy, "symbol": symbol,
           "instrument_type": "EQ", "side": side, "quantity": quantity, "price": price, "trace": f"T{n}"}
    return row | extra


def write_csv(day: Path, name: str, rows: list[dict[str, Any]]) -> None:
    day.mkdir(parents=True, exist_ok=True)
    with open(day / name, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS[name])
        writer.writeheader()
        writer.writerows(rows)


def tick(symbol: str, price: float, seq: int = 1, kind: str = "EQ") -> bytes:
    return orjson.dumps({"id": f"marketdata-x-{seq}", "ts": 1735790400_000_000_000 + seq, "type": "marketdata.tick",
                         "source": "marketdata", "seq": seq, "trace": f"marketdata-x-{seq}", "key": "1",
                         "payload": {"symbol": symbol, "last_price": price, "type": kind}}) + b"\n"


def heartbeat(seq: int) -> bytes:
    return orjson.dumps({"id": f"heartbeat-x-{seq}", "ts": 1, "type": "health.heartbeat", "source": "heartbeat",
                         "seq": seq, "trace": "", "key": "", "payload": {"daemon": "heartbeat"}}) + b"\n"


def write_events(day: Path, *lines: bytes) -> None:
    day.mkdir(parents=True, exist_ok=True)
    (day / EVENTS).write_bytes(b"".join(lines))


# Strategy a trades INFY with a partial close and a flip, b a round trip in TCS; both hold RELIANCE,
# which has no tick, so it is marked at its last fill price (60).
MIXED_DAY = [
    fill("a", "INFY", "BUY", 10, 100.0),   # a INFY +10 @ 100
    fill("a", "INFY", "BUY", 10, 110.0),   # +20 @ 105
    fill("a", "INFY", "SELL", 5, 120.0),   # partial close: 5 x (120 - 105) = +75, a win; +15 @ 105
    fill("b", "TCS", "BUY", 3, 200.0),
    fill("a", "INFY", "SELL", 25, 100.0),  # closes 15: 15 x (100 - 105) = -75, a loss; flips to -10 @ 100
    fill("b", "TCS", "SELL", 3, 210.0),    # 3 x (210 - 200) = +30, a win
    fill("b", "RELIANCE", "BUY", 1, 50.0),
    fill("a", "RELIANCE", "BUY", 1, 60.0, engine="fno"),
]


def mixed_day(tmp_path: Path) -> Path:
    day = tmp_path / DAY
    write_csv(day, "fills.csv", MIXED_DAY)
    write_events(day, tick("INFY", 97.0, 1), heartbeat(2), tick("TCS", 300.0, 3), tick("INFY", 95.0, 4))
    return day


def test_realised_and_unrealised_per_strategy_with_partial_close_and_flip(tmp_path: Path) -> None:
    report = build_report(mixed_day(tmp_path), "MIS")
    a, b = report["by_strategy"]["a"], report["by_strategy"]["b"]
    # a: +75 - 75 realised; INFY -10 @ 100 marked at the last tick 95 -> +50; RELIANCE 1 @ 60 at 60 -> 0
    assert (a["realised"], a["unrealised"], a["gross_pnl"]) == (0.0, 50.0, 50.0)
    assert (a["trades"], a["wins"], a["open_quantity"]) == (2, 1, 11)
    # b: +30 realised; RELIANCE 1 @ 50 at 60 -> +10
    assert (b["realised"], b["unrealised"], b["gross_pnl"]) == (30.0, 10.0, 40.0)
    assert (b["trades"], b["wins"], b["win_rate"]) == (1, 1, 1.0)
    assert report["by_symbol"]["INFY"]["unrealised"] == 50.0
    assert report["by_symbol"]["RELIANCE"]["open_quantity"] == 2
    assert report["by_engine"]["fno"]["fills"] == 1 and report["by_engine"]["equity"]["fills"] == 7
    assert report["positions"] == [
        {"engine": "equity", "strategy": "a", "symbol": "INFY", "quantity": -10, "average": 100.0, "mark": 95.0,
         "unrealised": 50.0},
        {"engine": "equity", "strategy": "b", "symbol": "RELIANCE", "quantity": 1, "average": 50.0, "mark": 60.0,
         "unrealised": 10.0},
        {"engine": "fno", "strategy": "a", "symbol": "RELIANCE", "quantity": 1, "average": 60.0, "mark": 60.0,
         "unrealised": 0.0},
    ]
    t = report["totals"]
    assert (t["realised"], t["unrealised"], t["gross_pnl"]) == (30.0, 60.0, 90.0)
    assert (t["fills"], t["orders"], t["trades"], t["wins"], t["losses"]) == (8, 8, 3, 2, 1)
    assert t["win_rate"] == 0.6667
    assert t["max_drawdown"] == 75.0  # realised after each fill: 0 0 75 75 0 30 30 30
    assert t["net_pnl"] == round(t["gross_pnl"] - t["charges"]["total"], 2)


def test_gross_pnl_is_cash_flow_plus_open_quantity_at_the_mark(tmp_path: Path) -> None:
    report = build_report(mixed_day(tmp_path), "MIS")
    t = report["totals"]
    assert (t["buy_value"], t["sell_value"]) == (2810.0, 3730.0)
    held = sum(p["quantity"] * p["mark"] for p in report["positions"])  # -10 x 95 + 2 x 60 = -830
    assert t["gross_pnl"] == pytest.approx(t["sell_value"] - t["buy_value"] + held, abs=0.01)
    for name, group in report["by_symbol"].items():
        fills = [f for f in MIXED_DAY if f["symbol"] == name]
        cash = sum(f["quantity"] * f["price"] * (1 if f["side"] == "SELL" else -1) for f in fills)
        held = sum(p["quantity"] * p["mark"] for p in report["positions"] if p["symbol"] == name)
        assert group["gross_pnl"] == pytest.approx(cash + held, abs=0.01), name


def round_trips(*exits: float) -> list[dict[str, Any]]:
    """Buy 1 at 1000, sell 1 at each exit price: one closed trade of (exit - 1000) each."""
    rows = []
    for price in exits:
        rows += [fill("s", "INFY", "BUY", 1, 1000.0), fill("s", "INFY", "SELL", 1, price)]
    return rows


def test_win_rate_and_max_drawdown(tmp_path: Path) -> None:
    # Trades +100, -30, -50, +200, -120: cumulative realised 100, 70, 20, 220, 100.
    # Falls from a peak: 100 -> 20 = 80, then 220 -> 100 = 120; the largest is 120.
    write_csv(tmp_path / "d1", "fills.csv", round_trips(1100.0, 970.0, 950.0, 1200.0, 880.0))
    t = build_report(tmp_path / "d1", "MIS")["totals"]
    assert (t["trades"], t["wins"], t["losses"], t["win_rate"]) == (5, 2, 3, 0.4)
    assert (t["realised"], t["max_drawdown"]) == (100.0, 120.0)

    # The day starts at 0: losing 40 first is a drawdown of 40 even though 0 was never a fill's result.
    write_csv(tmp_path / "d2", "fills.csv", round_trips(960.0, 1010.0))
    t = build_report(tmp_path / "d2", "MIS")["totals"]
    assert (t["win_rate"], t["max_drawdown"], t["realised"]) == (0.5, 40.0, -30.0)

    # Never falls: no drawdown.
    write_csv(tmp_path / "d3", "fills.csv", round_trips(1010.0, 1020.0))
    assert build_report(tmp_path / "d3", "MIS")["totals"]["max_drawdown"] == 0.0


# Hand-computed round trips, one per segment (rates in daemons/eod/charges.py). SEBI is 10 per crore
# = 0.0001%; GST is 18% of brokerage + transaction + SEBI; the total adds the rounded components.
SEGMENT_CASES = {
    # MIS: buy 100 @ 1500 (150,000), sell 100 @ 1510 (151,000); turnover 301,000.
    # brokerage min(45, 20) + min(45.3, 20) = 40; STT 0.025% x 151,000 = 37.75;
    # transaction 0.00297% x 301,000 = 8.9397; SEBI 0.301; stamp 0.003% x 150,000 = 4.50;
    # GST 0.18 x (40 + 8.9397 + 0.301) = 8.8633
    "equity_intraday": ((150_000.0, 151_000.0), {"brokerage": 40.0, "stt": 37.75, "transaction": 8.94, "sebi": 0.30,
                                                  "stamp": 4.50, "gst": 8.86, "total": 100.35}),
    # CNC: buy 10 @ 2500 (25,000), sell 10 @ 2600 (26,000); turnover 51,000.
    # brokerage 0; STT 0.1% x 51,000 = 51; transaction 1.5147; SEBI 0.051; stamp 0.015% x 25,000 = 3.75;
    # GST 0.18 x (1.5147 + 0.051) = 0.2818
    "equity_delivery": ((25_000.0, 26_000.0), {"brokerage": 0.0, "stt": 51.0, "transaction": 1.51, "sebi": 0.05,
                                                "stamp": 3.75, "gst": 0.28, "total": 56.59}),
    # FUT: buy 50 @ 22,000 (1,100,000), sell 50 @ 22,110 (1,105,500); turnover 2,205,500.
    # brokerage 20 + 20 (0.03% would be 330); STT 0.02% x 1,105,500 = 221.10;
    # transaction 0.00173% x 2,205,500 = 38.15515; SEBI 2.2055; stamp 0.002% x 1,100,000 = 22;
    # GST 0.18 x (40 + 38.15515 + 2.2055) = 14.4649
    "futures": ((1_100_000.0, 1_105_500.0), {"brokerage": 40.0, "stt": 221.10, "transaction": 38.16, "sebi": 2.21,
                                             "stamp": 22.0, "gst": 14.46, "total": 337.93}),
    # Options: sell 50 @ 130 (6,500 premium), buy back 50 @ 112 (5,600); turnover 12,100.
    # brokerage 20 flat x 2 = 40; STT 0.1% x 6,500 = 6.50; transaction 0.03503% x 12,100 = 4.23863;
    # SEBI 0.0121; stamp 0.003% x 5,600 = 0.168; GST 0.18 x (40 + 4.23863 + 0.0121) = 7.9651
    "options": ((5_600.0, 6_500.0), {"brokerage": 40.0, "stt": 6.50, "transaction": 4.24, "sebi": 0.01,
                                     "stamp": 0.17, "gst": 7.97, "total": 58.89}),
}


@pytest.mark.parametrize("segment", SEGMENT_CASES)
def test_charges_per_segment(segment: str) -> None:
    (buy, sell), expected = SEGMENT_CASES[segment]
    charges = order_charges(segment, "BUY", buy) + order_charges(segment, "SELL", sell)
    assert charges.breakdown() == pytest.approx(expected, abs=1e-9)


def test_charges_in_the_report_count_brokerage_once_per_order(tmp_path: Path) -> None:
    # The intraday round trip above, the buy filled in two parts of one order; then the options one.
    write_csv(tmp_path / DAY, "fills.csv", [
        fill("eq", "INFY", "BUY", 60, 1500.0, order_id="B1"),
        fill("eq", "INFY", "BUY", 40, 1500.0, order_id="B1"),
        fill("eq", "INFY", "SELL", 100, 1510.0),
        fill("opt", "NIFTY25JAN23500CE", "SELL", 50, 130.0, engine="options", instrument_type="CE"),
        fill("opt", "NIFTY25JAN23500CE", "BUY", 50, 112.0, engine="options", instrument_type="CE"),
    ])
    report = build_report(tmp_path / DAY, "MIS")
    t = report["totals"]
    assert t["orders"] == 4 and t["fills"] == 5
    assert report["by_strategy"]["eq"]["charges"] == 100.35
    assert report["by_strategy"]["opt"]["charges"] == 58.89
    # Components of both, rounded once: brokerage 80; STT 37.75 + 6.5; transaction 8.9397 + 4.23863 = 13.17833;
    # SEBI 0.301 + 0.0121 = 0.3131; stamp 4.5 + 0.168; GST 8.863326 + 7.9651314 = 16.8284574
    assert t["charges"] == {"brokerage": 80.0, "stt": 44.25, "transaction": 13.18, "sebi": 0.31, "stamp": 4.67,
                            "gst": 16.83, "total": 159.24}
    # INFY +1,000, options 50 x (130 - 112) = +900
    assert (t["gross_pnl"], t["net_pnl"]) == (1900.0, 1740.76)


def test_empty_instrument_type_comes_from_the_ticks(tmp_path: Path) -> None:
    option = "NIFTY25JAN23500CE"
    write_csv(tmp_path, "fills.csv", [fill("opt", option, "SELL", 50, 130.0, instrument_type="")])
    with pytest.raises(ReportError, match=rf"fills\.csv:2: instrument_type is empty and no tick of {option}"):
        build_report(tmp_path, "MIS")
    write_events(tmp_path, tick(option, 125.0, 1, kind="CE"))
    # options: 20 flat, where equity would have charged min(0.03% x 6,500, 20) = 1.95
    assert build_report(tmp_path, "MIS")["totals"]["charges"]["brokerage"] == 20.0


def test_markdown_shows_the_totals(tmp_path: Path) -> None:
    report = build_report(mixed_day(tmp_path), "MIS")
    md = render_markdown(report)
    t = report["totals"]
    assert md.startswith(f"# End-of-day report: {DAY}\n")
    assert f"| Net P&L | {t['net_pnl']:,.2f} |" in md
    assert f"| Gross P&L | {t['gross_pnl']:,.2f} |" in md
    assert f"| Turnover | {t['turnover']:,.2f} |" in md
    assert "| Win rate | 66.7% |" in md
    assert f"| Total | {t['charges']['total']:,.2f} |" in md
    assert "| equity | a | INFY | -10 | 100.00 | 95.00 | 50.00 |" in md
    assert "## By engine" in md and "## By strategy" in md and "## By symbol" in md
    assert "estimates" in md


def test_empty_day(tmp_path: Path) -> None:
    for day in (tmp_path / "missing", tmp_path):  # no directory; a directory without files
        report = build_report(day, "MIS")
        t = report["totals"]
        assert t["fills"] == t["orders"] == t["trades"] == 0
        assert t["net_pnl"] == t["gross_pnl"] == t["max_drawdown"] == t["charges"]["total"] == 0.0
        assert report["by_engine"] == report["by_strategy"] == report["by_symbol"] == {}
        assert report["positions"] == []
        assert "None: every position was closed." in render_markdown(report)


def test_order_states_count_rejected_and_cancelled_by_final_state(tmp_path: Path) -> None:
    def order(client_id: str, status: str) -> dict[str, Any]:
        return {"client_id": client_id, "engine": "equity", "strategy": "s", "symbol": "INFY", "side": "BUY",
                "quantity": 1, "status": status}

    write_csv(tmp_path, "orders.csv", [order("c1", "OPEN"), order("c2", "REJECTED"), order("c1", "CANCELLED"),
                                       order("c3", "OPEN"), order("c3", "COMPLETE"), order("c4", "CANCELLED")])
    t = build_report(tmp_path, "MIS")["totals"]
    assert (t["rejected"], t["cancelled"], t["orders"]) == (1, 2, 0)


def test_torn_last_line_of_events_is_ignored(tmp_path: Path) -> None:
    write_csv(tmp_path, "fills.csv", [fill("s", "INFY", "BUY", 2, 100.0)])
    torn = tick("INFY", 90.0, 3)[:-25]  # the journal died mid-write: no closing brace, no newline
    write_events(tmp_path, tick("INFY", 105.0, 1), heartbeat(2), torn)
    report = build_report(tmp_path, "MIS")
    assert report["positions"][0]["mark"] == 105.0
    assert report["totals"]["unrealised"] == 10.0


def test_corrupt_event_line_names_file_and_line(tmp_path: Path) -> None:
    write_events(tmp_path, tick("INFY", 105.0, 1), b'{"type":"marketdata.tick",\n', tick("INFY", 90.0, 3))
    with pytest.raises(ReportError, match=rf"{EVENTS}:2: not a JSON event"):
        build_report(tmp_path, "MIS")


@pytest.mark.parametrize(("row", "message"), [
    ({"quantity": "ten"}, "quantity 'ten' is not a number"),
    ({"side": "HOLD"}, "side 'HOLD' is not BUY or SELL"),
    ({"price": "nan"}, "price 'nan' is not a positive number"),
    ({"instrument_type": "XX"}, "unknown instrument_type 'XX'"),
])
def test_malformed_fill_names_file_and_line(tmp_path: Path, row: dict[str, str], message: str) -> None:
    write_csv(tmp_path, "fills.csv", [fill("s", "INFY", "BUY", 1, 100.0), fill("s", "INFY", "SELL", 1, 101.0) | row])
    with pytest.raises(ReportError, match=rf"fills\.csv:3: {message}"):
        build_report(tmp_path, "MIS")


def test_short_fill_row_names_file_and_line(tmp_path: Path) -> None:
    write_csv(tmp_path, "fills.csv", [fill("s", "INFY", "BUY", 1, 100.0)])
    with open(tmp_path / "fills.csv", "a") as f:
        f.write("2025-01-02T10:00:00+05:30,x,F9\n")
    with pytest.raises(ReportError, match=r"fills\.csv:3: expected 13 fields"):
        build_report(tmp_path, "MIS")


def test_charges_add_up() -> None:
    assert (Charges(1.0, 2.0) + Charges(stt=0.5, gst=0.25)).breakdown()["total"] == 3.75


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "fleet.toml"
    config.write_text(f'[daemons.journal]\ndirectory = "{tmp_path}/journal"\n[eod]\nreports = "{tmp_path}/reports"\n')
    return config


def test_main_writes_json_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mixed_day(tmp_path / "journal")
    main(["--config", str(write_config(tmp_path)), "--day", DAY])
    report = orjson.loads((tmp_path / "reports" / f"{DAY}.json").read_bytes())
    assert report["day"] == DAY and report["totals"]["gross_pnl"] == 90.0
    assert (tmp_path / "reports" / f"{DAY}.md").read_text() == render_markdown(report)
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [f"{DAY}.json", f"{DAY}.md"]  # no .tmp left
    err = capsys.readouterr().err
    assert f"net P&L {report['totals']['net_pnl']:.2f}" in err and f"{DAY}.md" in err


def test_main_without_a_journal_writes_an_empty_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--config", str(write_config(tmp_path)), "--day", "2025-01-03"])
    assert "no journal for 2025-01-03" in capsys.readouterr().err
    report = orjson.loads((tmp_path / "reports" / "2025-01-03.json").read_bytes())
    assert report["totals"]["fills"] == 0 and (tmp_path / "reports" / "2025-01-03.md").exists()


def test_main_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(config), "--day", "2025-13-01"])
    assert exc.value.code == 2 and "is not a date" in capsys.readouterr().err

    bad = tmp_path / "bad.toml"
    bad.write_text("[eod]\nreport = \"/tmp/x\"\n")
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(bad), "--day", DAY])
    assert exc.value.code == 78 and "eod.report: unknown key" in capsys.readouterr().err

    write_csv(tmp_path / "journal" / DAY, "fills.csv", [fill("s", "INFY", "BUY", 0, 100.0)])
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(config), "--day", DAY])
    assert exc.value.code == 65 and "fills.csv:2: quantity 0 is not positive" in capsys.readouterr().err


def allocation(seq: int, fill_id: str, symbol: str, price: float, units: dict[str, int]) -> bytes:
    return orjson.dumps({"id": f"risk-x-{seq}", "ts": 1735790400_000_000_000 + 1000 + seq, "type": "portfolio.allocation",
                         "source": "risk", "seq": seq, "trace": "t", "key": symbol,
                         "payload": {"fill_id": fill_id, "signal_id": "s:1", "symbol": symbol, "side": "BUY",
                                     "instrument_type": "EQ", "price": price, "portfolios": list(units),
                                     "units": list(units.values())}}) + b"\n"


def test_per_portfolio_pnl_from_the_allocations_adds_up_to_the_strategys(tmp_path: Path) -> None:
    """A net order of 30 bought in two fills and sold in one, allocated to p1/p2/p3; risk told one allocation
    twice (after a restart): counted once. The portfolios' gross P&L sums to the strategy's."""
    day = tmp_path / DAY
    write_csv(day, "fills.csv", [fill("ema", "INFY", "BUY", 20, 100.0, fill_id="F1"),
                                 fill("ema", "INFY", "BUY", 10, 103.0, fill_id="F2"),
                                 fill("ema", "INFY", "SELL", 15, 110.0, fill_id="F3")])
    write_events(day, tick("INFY", 108.0),
                 allocation(1, "F1", "INFY", 100.0, {"p1": 10, "p2": 7, "p3": 3}),
                 allocation(2, "F2", "INFY", 103.0, {"p1": 5, "p2": 3, "p3": 2}),
                 allocation(3, "F2", "INFY", 103.0, {"p1": 5, "p2": 3, "p3": 2}),
                 allocation(4, "F3", "INFY", 110.0, {"p1": -15}))
    report = build_report(day, "MIS")
    p = report["by_portfolio"]
    assert p["p1"]["realised"] == 15 * (110.0 - 101.0) and p["p1"]["open_quantity"] == 0
    assert p["p2"]["unrealised"] == round(7 * 8.0 + 3 * 5.0, 2) and p["p2"]["fills"] == 2
    assert sum(g["gross_pnl"] for g in p.values()) == pytest.approx(report["by_strategy"]["ema"]["gross_pnl"])
    assert "## By portfolio" in render_markdown(report)
    assert build_report(mixed_day(tmp_path / "other"), "MIS")["by_portfolio"] == {}
