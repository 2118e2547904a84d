"""Why algo-execution did not send an order, in the words its log, the journal and the trader read: one
place for the texts the paper and Kite paths share (a refused access token halts both the queue and a send
in flight)."""

DISK_FULL_REFUSAL = "state disk full: the write-ahead log cannot be written ({}); not sent"
NOT_DURABLE_REFUSAL = "state disk: the order's intent cannot be flushed to the write-ahead log ({}); not sent"
DAY_UNOPENED = ("%s: the day's write-ahead log cannot be opened (%s); new orders are refused until it can (tried again "
                "every second)")
DAY_UNOPENED_REFUSAL = "state disk: today's write-ahead log cannot be opened ({}); not sent"
PARKED_STALE = ("stale: no tick of {symbol} came within max_order_age_sec ({age:g}s), and the approval did not say its "
                "exchange and lot size; not sent late")
PARKED_AT_ROLL = "end of day: no tick of {symbol} came, so it was not sent"
QUEUED_AT_ROLL = "end of day: it still waited for the order-rate budget, so it was not sent"
TOKEN_HALT = "Kite refused the access token: new orders are halted until `algoctl login` installs today's"
