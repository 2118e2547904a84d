"""Live mode under a real systemd against the Kite emulator on another machine (a network namespace
of the test's own, reached by a name its DNS server resolves, as the fleet reaches api.kite.trade):
algo-marketdata streams Kite's ticker onto the bus, algo-execution trades through the real kiteconnect
client, and the worst day happens in turn (a 429 storm, the ticker dropped and refused for a minute with
algo-execution killed between Kite taking an order and the reply being read, the token expiring
mid-session and `algoctl login` restoring it). The secrets never show in the journal, in any
unit's environment or in `algoctl config show`. Only the units that talk to Kite reach it; the others
stay loopback-only in live mode too.

The tests share one sandbox and run in file order; each starts from what the one before left.
"""

from __future__ import annotations

import secrets
import shutil
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from kiteconnect import KiteTicker

from daemons.algoctl.sandbox import Sandbox
from daemons.algoctl.units import KITE_UNITS
from daemons.execution.clientid import client_id
from daemons.kite_emulator import Emulator
from daemons.kite_emulator.packets import encode, message
from daemons.marketdata.kite_feed import session_opened
from daemons.runtime.config import load_config
from tests.conftest import TEST_CONFIG, require_systemd_sandbox
from tests.helpers import wait_until
from tests.systemd.busclient import Listener
from tests.systemd.offhost import Peer
from tests.systemd.test_metrics_catalogue import catalogue, exported
from tests.test_kite_feed import FULL_TICK, NIFTY_50, USDINR, write_dump

pytestmark = pytest.mark.systemd

INFY = 408065
UNIVERSE = '["NSE:INFY", "INDICES:NIFTY 50", "CDS:USDINR26NOVFUT"]'
CREDS = "/etc/algo/credentials"
KITE_HOST = "kite.emulator.test"  # resolved by the peer's DNS server (the sandbox's resolver) to the emulator


def named(url: str) -> str:
    """The emulator's URL with its address replaced by KITE_HOST: the fleet resolves the name."""
    return url.replace(str(urlsplit(url).hostname), KITE_HOST, 1)


def live_config(em: Emulator) -> str:
    edits = {
        'mode = "paper"': 'mode = "live"',
        'feed = "simulator"': f'feed = "kite"\nuniverse = {UNIVERSE}\nstale_after_sec = 30.0',
        'broker = "paper"': 'broker = "kite"\npoll_sec = 60.0',  # order news from postbacks and replies only
    }
    text = TEST_CONFIG
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    return text + f'\n[kite]\nroot = "{named(em.root)}"\nticker_root = "{named(em.ws_url)}"\ntimeout_sec = 3.0\n'


class Live:
    def __init__(self, box: Sandbox, em: Emulator, bus: Listener) -> None:
        self.box, self.em, self.bus = box, em, bus
        self.n = 0

    def events(self, topic: str) -> list[dict[str, Any]]:
        return [ev.payload for _, ev in list(self.bus.events) if ev.type == topic]

    def tick_seen(self, price: float) -> None:
        """Move INFY and wait for the tick on the bus (execution fills and marks on it)."""
        self.em.set_price("NSE:INFY", price)
        wait_until(lambda: any(t["symbol"] == "INFY" and t["last_price"] == price
                               for t in self.events("marketdata.tick")), 20, f"INFY at {price} on the bus")

    def signal(self) -> tuple[str, str]:
        """A fresh signal id and the tag (client id) its order will carry."""
        self.n += 1
        signal = f"live-test:{secrets.token_hex(3)}:{self.n}"
        return signal, client_id(signal)

    def approve(self, signal: str, side: str = "BUY", quantity: int = 5) -> None:
        """An approval as risk sends it (with its instrument's facts, as an engine's signal brings them)."""
        self.bus.publish("risk.approved", {
            "engine": "equity", "strategy": "live-test", "symbol": "INFY", "side": side, "quantity": quantity,
            "order_type": "MARKET", "limit_price": None, "signal_id": signal, "tick_ts": time.time_ns(),
            "instrument_type": "EQ", "exchange": "NSE", "lot_size": 1, "tick_size": 0.05, "strike": 0.0})

    def order(self, side: str = "BUY", quantity: int = 5) -> str:
        signal, tag = self.signal()
        self.approve(signal, side, quantity)
        return tag

    def orders(self) -> Counter[str]:
        return Counter(o["tag"] for o in self.em.book.orders())

    def status_of(self, tag: str) -> str | None:
        updates = [o for o in self.events("execution.order") if o["client_id"] == tag]
        return updates[-1]["status"] if updates else None

    def metric(self, name: str) -> float:
        text = urllib.request.urlopen("http://127.0.0.1:9477/metrics", timeout=5).read().decode()
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]
        assert values, f"{name} not exported"
        return sum(values)

    def restarts(self, unit: str) -> int:
        return int(self.box.show(unit, "NRestarts")["NRestarts"])

    def login(self) -> str:
        """`algoctl login` inside the sandbox, as the operator runs it each morning."""
        # --key host: the sandbox keeps /var/lib/systemd (the host key) on a tmpfs, which "auto" refuses
        done = self.box.run(f"{self.box.venv}/bin/algoctl", "login", "--key", "host", "--config", "/etc/algo/fleet.toml",
                            input=f"request-{secrets.token_hex(4)}\n", timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    require_systemd_sandbox()
    root = tmp_path_factory.mktemp("live")
    secret = "apisecret-" + secrets.token_hex(8)
    with Peer() as kite:
        with kite.inside():  # the emulator's sockets belong to the peer's network namespace
            emulator = Emulator(instruments_csv=write_dump(root / "dump.csv"), api_secret=secret,
                                heartbeat_interval=0.5, host=kite.address)
        kite.serve_names({KITE_HOST: kite.address})
        yield from run_live(root, emulator, secret, Sandbox(root / "sandbox", nameserver=kite.address))


def run_live(root: Path, emulator: Emulator, secret: str, box: Sandbox) -> Iterator[Live]:
    with emulator as em:
        em.set_price("NSE:INFY", 1500.0)
        (root / "fleet.toml").write_text(live_config(em))
        box.prepare(root / "fleet.toml")
        creds = box.etc / "credentials"
        creds.mkdir(mode=0o700)
        for name, value in (("kite_api_key", em.api_key), ("kite_api_secret", secret)):
            (creds / name).write_text(value)
            (creds / name).chmod(0o600)
        for unit in KITE_UNITS:  # what ansible/deploy.yml's credentials drop-in says
            box.install_dropin(unit, "algo-credentials", "[Service]\n"
                               f"LoadCredential=kite_api_key:{CREDS}/kite_api_key\n"
                               f"LoadCredentialEncrypted=kite_access_token:{CREDS}/kite_access_token.cred\n")
        box.start()
        try:
            live = Live(box, em, Listener(box, "marketdata.*", "execution.*").__enter__())
            out = live.login()  # the morning's login: nothing runs yet, so nothing is restarted
            assert "encrypted with systemd-creds" in out, out
            started = box.systemctl("start", "algo-execution.service", "algo-marketdata.service", timeout=120)
            assert started.returncode == 0, box.journalctl("-n", "60", "-o", "short-monotonic").stdout
            wait_until(lambda: any(INFY in s for s in em.subscriptions()), 30, "the feed's subscription")
            yield live
            live.bus.__exit__(None, None, None)
        finally:
            box.stop()


def test_kite_shaped_packets_become_the_right_ticks_on_the_bus(live: Live) -> None:
    em = live.em
    wait_until(lambda: any(all(t in s for t in (INFY, NIFTY_50, USDINR)) for s in em.subscriptions()), 20,
               "the whole universe subscribed")
    for name, packet in (("quote", encode(FULL_TICK, "quote")),
                         ("full", encode(replace(FULL_TICK, last_price=1574.0, volume_traded=1192480), "full"))):
        (reference,) = KiteTicker("k", "t")._parse_binary(message([packet]))
        em.push_packet(INFY, packet)
        wait_until(lambda: any(t["symbol"] == "INFY" and t["last_price"] == reference["last_price"]
                               and t.get("volume") == reference.get("volume_traded")
                               for t in live.events("marketdata.tick")), 20, f"{name} on the bus")
    em.push_tick(NIFTY_50, last_price=24350.55)
    em.push_tick(USDINR, last_price=88.6725)
    wait_until(lambda: {("NIFTY 50", 24350.55), ("USDINR26NOVFUT", 88.6725)}
               <= {(t["symbol"], t["last_price"]) for t in live.events("marketdata.tick")}, 20,
               "the index and currency ticks")
    [index] = [t for t in live.events("marketdata.tick") if t["symbol"] == "NIFTY 50"]
    [usdinr] = [t for t in live.events("marketdata.tick") if t["symbol"] == "USDINR26NOVFUT"]
    assert (index["exchange"], usdinr["exchange"], usdinr["type"]) == ("NSE", "CDS", "FUT")


def test_order_lifecycle_with_partial_fills_and_a_rejection_and_positions_match_kite(live: Live) -> None:
    em = live.em
    live.tick_seen(1501.0)
    (partial_signal, partial), (rms_signal, rms) = live.signal(), live.signal()
    em.add_rule(tag=partial, slices=[4, 3])
    em.add_rule(tag=rms, reject="RMS:Margin Exceeds, Required:15010.00, Available:0.00")
    live.approve(partial_signal, "BUY", 10)
    live.approve(rms_signal, "BUY", 10)
    sold = live.order("SELL", 2)
    wait_until(lambda: live.status_of(rms) == "REJECTED" and live.status_of(sold) == "COMPLETE", 30,
               "the rejection and the sell")
    def filled() -> int:
        return sum(f["quantity"] for f in live.events("execution.fill") if f["client_id"] == partial)

    for price, quantity in ((None, 4), (1502.5, 7)):  # a slice on arrival, one more on the next trade
        if price:
            live.tick_seen(price)
        wait_until(lambda: filled() == quantity, 30, f"{quantity} of 10 filled")
        assert live.status_of(partial) == "OPEN"
    live.tick_seen(1503.0)  # the rest trades
    wait_until(lambda: live.status_of(partial) == "COMPLETE", 30, "the rest of the partial order")

    assert live.orders() == {partial: 1, rms: 1, sold: 1}
    [reject] = [r for r in live.events("execution.reject") if r["client_id"] == rms]
    assert reject["reason"].startswith("RMS:Margin Exceeds")
    fills = live.events("execution.fill")
    assert len({f["fill_id"] for f in fills}) == len(fills), "a fill published twice"
    assert sorted(f["quantity"] for f in fills if f["client_id"] == partial) == [3, 3, 4]
    net = sum(f["quantity"] if f["side"] == "BUY" else -f["quantity"] for f in fills)
    [position] = em.book.positions()["net"]
    assert (position["tradingsymbol"], position["quantity"]) == ("INFY", net) == ("INFY", 8)
    journal = live.box.journalctl("-u", "algo-execution", "-o", "cat", f"ORDER_ID={rms}").stdout
    assert "rejected by the broker" in journal


def test_a_429_storm_loses_nothing_doubles_nothing_and_slows_the_governor(live: Live) -> None:
    live.tick_seen(1503.5)
    held = live.metric("algo_execution_throttled_total")
    live.em.faults.rate_limit(seconds=3.0, prefix="/orders")
    first = [live.order("BUY", 1) for _ in range(3)]
    wait_until(lambda: live.metric('algo_execution_kite_events_total{event="rate_limited"}') > 0, 10, "a 429")
    then = [live.order("BUY", 1) for _ in range(3)]  # 6 orders: within Kite's 10/s, held back only for the 429s
    tags = first + then
    wait_until(lambda: all(live.status_of(t) == "COMPLETE" for t in tags), 60, "every order of the storm")
    assert all(live.orders()[t] == 1 for t in tags), "an order lost or placed twice"
    assert live.metric("algo_execution_throttled_total") >= held + 3, "the governor did not hold back"
    assert live.restarts("algo-execution.service") == 0


def test_ticker_dropped_and_refused_for_a_minute_with_execution_killed_between_accept_and_reply(
        live: Live) -> None:
    box, em = live.box, live.em
    live.tick_seen(1504.0)
    feed_pid = live.box.show("algo-marketdata.service", "MainPID")
    em.faults.drop_ws(times=10)
    wait_until(lambda: em.faults.describe()["drop_ws"]["times"] == 0, 60, "ten drops in a row")
    em.faults.refuse_ws(60.0)
    refused_at = time.monotonic()
    em.faults.drop_ws(times=2)  # the feed's and execution's connections, if back before the refusal
    wait_until(lambda: em.subscriptions() == [], 20, "every ticker connection down")

    # No postback can adopt it now, and the poll is a minute away: only the restart can.
    em.faults.swallow_replies(1)
    restarts = live.restarts("algo-execution.service")
    tag = live.order("BUY", 3)
    wait_until(lambda: em.held_replies == 1, 20, "Kite to take the order and hold its reply")
    box.systemctl("kill", "--signal=KILL", "algo-execution.service", check=True)
    wait_until(lambda: live.restarts("algo-execution.service") == restarts + 1
               and box.show("algo-execution.service", "ActiveState")["ActiveState"] == "active", 60,
               "systemd to restart algo-execution")
    assert live.orders()[tag] == 1
    wait_until(lambda: live.status_of(tag) == "COMPLETE", 30, "the adopted order published")
    adopted = box.journalctl("-u", "algo-execution", "-o", "cat", f"ORDER_ID={tag}").stdout
    assert "adopted, not sent again" in adopted, adopted
    assert live.metric('algo_execution_reconciliations_total{result="adopted"}') == 1

    # Outside market hours the feed redials at most every 60 s (+ jitter): back within two minutes of the end.
    wait_until(lambda: any(INFY in s for s in em.subscriptions()), 200, "the feed back after the refusal")
    assert time.monotonic() - refused_at >= 55
    live.tick_seen(1505.0)
    errors = box.journalctl("-u", "algo-marketdata", "-p", "err", "-o", "cat").stdout.strip()
    if session_opened(time.time(), time.monotonic(), load_config(box.etc / "fleet.toml").market) is None:
        assert not errors, f"a routine outage logged at err:\n{errors}"
    else:  # in market hours a minute without ticks is an incident: unhealthy, and the watchdog restarts the feed
        assert all("unhealthy" in line or "Watchdog timeout" in line for line in errors.splitlines()), errors
    if box.show("algo-marketdata.service", "MainPID") == feed_pid:  # in market hours the watchdog may restart it
        scrape = urllib.request.urlopen("http://127.0.0.1:9472/metrics", timeout=5).read().decode()
        [line] = [x for x in scrape.splitlines() if x.startswith("algo_marketdata_reconnects_total")]
        # Its share of the 12 drops (execution's connection, redialling sooner, takes many) and the refusal.
        assert float(line.split()[1]) >= 2, line


def test_token_expiry_mid_session_halts_entries_and_login_restores_trading(live: Live) -> None:
    box, em = live.box, live.em
    live.tick_seen(1506.0)
    wait_until(lambda: em.subscriptions() and len(em.subscriptions()) >= 2, 30, "execution's order-update connection")
    em.expire_tokens()
    refused = live.order("BUY", 1)
    wait_until(lambda: "HALTED" in box.show("algo-execution.service", "StatusText")["StatusText"], 30,
               "execution to halt")
    blocked = live.order("BUY", 1)
    wait_until(lambda: any(r["client_id"] == blocked for r in live.events("execution.reject")), 20,
               "the next entry refused")
    assert live.orders()[refused] == 0 and live.orders()[blocked] == 0
    [line] = box.journalctl("-u", "algo-execution", "-p", "crit", "-o", "cat").stdout.splitlines()
    assert line.startswith("Kite refused the access token: new orders are halted until `algoctl login`")
    assert live.metric("algo_broker_token_expiry_seconds") <= 0
    assert box.show("algo-execution.service", "ActiveState")["ActiveState"] == "active"
    assert live.restarts("algo-execution.service") == 1  # only the kill of the test before

    time.sleep(6)  # the order caught by the expiry is now older than max_order_age_sec: never sent late
    out = live.login()
    assert "restarted algo-execution.service algo-marketdata.service" in out, out
    wait_until(lambda: box.show("algo-execution.service", "ActiveState")["ActiveState"] == "active"
               and "HALTED" not in box.show("algo-execution.service", "StatusText")["StatusText"], 60,
               "execution back with the new token")
    assert live.metric("algo_broker_token_expiry_seconds") > 0
    wait_until(lambda: any(INFY in s for s in em.subscriptions()), 30, "the feed back with the new token")
    live.tick_seen(1507.0)
    after = live.order("BUY", 1)
    wait_until(lambda: live.status_of(after) == "COMPLETE", 30, "an order with the new token")
    stale = [r for r in live.events("execution.reject") if r["client_id"] == refused]
    assert live.orders()[refused] == 0 and stale, "the order caught by the expiry was neither sent nor settled"


def test_secrets_never_reach_the_journal_the_environment_or_config_show(live: Live) -> None:
    box, em = live.box, live.em
    token = box.run("systemd-creds", "decrypt", "--name=kite_access_token", f"{CREDS}/kite_access_token.cred",
                    "-").stdout.strip()
    secret = (box.etc / "credentials" / "kite_api_secret").read_text()
    assert len(token) > 10 and token != em.access_token
    journal = box.journalctl("-o", "json").stdout
    environ = box.run("sh", "-c", "cat /proc/[0-9]*/environ 2>/dev/null").stdout
    assert "ALGO_CONFIG=" in environ  # the units' environments were read
    shown = box.run(f"{box.venv}/bin/algoctl", "config", "show", "--credentials", CREDS,
                    "--config", "/etc/algo/fleet.toml").stdout
    assert '"api_secret": "**********"' in shown  # read from the credentials, shown masked
    for leak in (token, secret, em.access_token):
        for where, text in (("journal", journal), ("environ", environ), ("config show", shown)):
            assert leak not in text, f"a secret in the {where}"


def test_the_live_units_export_the_live_only_catalogue(live: Live) -> None:
    """docs/METRICS.md's live-only rows (which the paper fleet's catalogue test leaves out), each with
    its type, in a real scrape of the live feed and live execution."""
    seen = {**exported(9472), **exported(9477)}
    live_only = catalogue("Live mode only")
    assert live_only and {name: seen.get(name) for name in live_only} == live_only


# Resolves KITE_HOST (argv 1) through DNS, then connects to the address (argv 2) and port (argv 3) whatever
# the answer; prints what it got to, for the probe unit's journal.
PROBE = ("import socket, sys\ntry: print('resolved', socket.gethostbyname(sys.argv[1]), flush=True)\n"
         "except OSError as e: print('unresolved:', e, flush=True)\n"
         "socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=5); print('connected')")


def probe(box: Sandbox, unit: str, address: str, port: int, *, dropins: bool = True) -> tuple[bool, str]:
    """Whether a process under ``unit``'s sandboxing, its [Service] section as rendered and (with
    ``dropins``) its drop-ins, resolves KITE_HOST and connects to ``address``:``port``; and what it logged."""
    name = f"algo-probe-{'live' if dropins else 'bare'}-{unit}"
    escaped = PROBE.replace("\n", "\\n")  # systemd turns \n in a quoted argument back into a newline
    service = (box.units / unit).read_text().split("[Service]", 1)[1]
    (box.units / name).write_text(f"[Unit]\nDescription=connect to Kite as {unit}\n\n[Service]{service}")
    shutil.rmtree(box.units / f"{name}.d", ignore_errors=True)
    if dropins and (box.units / f"{unit}.d").is_dir():
        shutil.copytree(box.units / f"{unit}.d", box.units / f"{name}.d")
    box.install_dropin(name, "zz-probe", "[Service]\nType=oneshot\nRestart=no\nWatchdogSec=0\nExecReload=\n"
                       f"SyslogIdentifier={name}\nExecStart=\n"
                       f'ExecStart={box.venv}/bin/python -c "{escaped}" {KITE_HOST} {address} {port}\n')
    box.daemon_reload()
    started = box.systemctl("start", name, timeout=60)
    return started.returncode == 0, box.journalctl("-u", name, "-o", "cat").stdout


def test_only_the_kite_units_reach_kite_off_host_by_name(live: Live) -> None:
    """The fleet got to the emulator (ticks, orders, login above) at a non-loopback address of another
    network namespace, through its name and that namespace's DNS server. Premarket's token check gets
    there too; a unit that does not talk to Kite reaches neither, nor does execution without the live
    drop-in (as in paper mode)."""
    box, em = live.box, live.em
    address, port = urlsplit(em.root).hostname, int(urlsplit(em.root).port or 0)
    assert address and not address.startswith("127.") and KITE_HOST in (box.etc / "fleet.toml").read_text()
    checked = box.systemctl("restart", "algo-premarket.service", timeout=90)
    assert checked.returncode == 0, box.journalctl("-u", "algo-premarket", "-o", "cat").stdout[-3000:]
    assert "premarket passed: 7 checks" in box.journalctl("-u", "algo-premarket", "-o", "cat").stdout  # token checked

    connected, said = probe(box, "algo-execution.service", address, port)
    assert connected and f"resolved {address}" in said and "connected" in said, said
    for unit, dropins in (("algo-risk.service", True), ("algo-execution.service", False)):
        connected, said = probe(box, unit, address, port, dropins=dropins)
        assert not connected and "unresolved:" in said, said  # the DNS server is off-host too
        assert "\nconnected" not in said and ("TimeoutError" in said or "PermissionError" in said), said
