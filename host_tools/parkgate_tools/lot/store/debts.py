"""Owed fees collected at the plate's next visit (firmware/docs/lot-server.md,
"Money"; the fee answer's "debt": firmware/docs/mqtt.md). A base of
EventStore: it uses the store's lot, _query, _transaction, _lock, _sql,
_insert_correction and _insert_audit.

How a debt is collected at the gate:

1. A fee answer to an exit of a plate with owed exits (record.FLAG_OWED,
   a fee, not settled) adds what they come to (``debts_of``) and is kept
   as an offer (``offer_debt``): the exit's plate, time and the fee
   answered, and each owed exit it covers.
2. When an exit is stored whose plate, time and fee are an offer's, and
   whose fee came from the lot server (fee source "on"), the gate charged
   that fee: in the same transaction (``_settle_debts``, called by
   ingest_many) each owed exit the offer covered gets a "settled"
   correction (sign 0: its fen are in the paying exit's fee) by
   "next-visit" whose note names the paying exit. If that exit was let out
   unpaid too, its owed fee carries the debt: the old exits are settled
   all the same, so the debt is owed once.

An exit the gate charged offline (its own tariff, no debt) or with another
fee matches no offer: the debt stays owed. A replayed exit is no new row,
so nothing is settled twice. An owed exit settled between the answer and
the exit's arrival (collected by hand, waived) was paid twice: it gets no
second settlement, and the audit log says "next-visit-overpaid" with the
fen to refund."""
import logging
import time

from parkgate import record
from parkgate_tools.lot.store import schema

log = logging.getLogger("parkgate.store")

NEXT_VISIT = "next-visit"     # who settles: the correction's by, the audit's who
DEBTS_MAX = 20                # owed exits one fee answer adds at most (oldest first)
OFFER_KEEP_S = 7 * 86400      # offers older than this are dropped at the next one
_IN_CHUNK = 500               # plates per IN list

SCHEMA = (
    # What a fee answer added: one row per owed exit it covered.
    """CREATE TABLE IF NOT EXISTS debt_offers (
        lot TEXT NOT NULL,
        plate TEXT NOT NULL,
        exit_time BIGINT NOT NULL,     -- the exit the answer was for (up/fee "t")
        fee BIGINT NOT NULL,           -- the fee answered: the stay's own plus the debt
        owed_gate TEXT NOT NULL,       -- an owed exit the debt covers
        owed_jid BIGINT NOT NULL,
        owed_seq BIGINT NOT NULL,
        owed_fee BIGINT NOT NULL,
        offered_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (lot, plate, exit_time, fee, owed_gate, owed_jid, owed_seq))""",
    "CREATE INDEX IF NOT EXISTS debt_offers_by_age ON debt_offers (lot, offered_at)",
)

# The owed exits of a plate before a time that no correction settled, with a fee.
DEBTS_OF = """SELECT x.gate, x.jid, x.seq, x.fee FROM events x
    WHERE x.lot = ? AND x.plate = ? AND x.time < ? AND x.fee > 0 AND %s AND %s
    ORDER BY x.time, x.gate, x.jid, x.seq LIMIT ?""" % (
    schema._OWED_EXIT.format(x="x"), schema._unsettled("x"))
INSERT_OFFER = """INSERT INTO debt_offers (lot, plate, exit_time, fee, owed_gate, owed_jid,
        owed_seq, owed_fee, offered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (lot, plate, exit_time, fee, owed_gate, owed_jid, owed_seq)
    DO UPDATE SET offered_at = excluded.offered_at"""
DROP_OLD_OFFERS = "DELETE FROM debt_offers WHERE lot = ? AND offered_at < ?"
OFFERS_OF_PLATES = """SELECT plate, exit_time, fee, owed_gate, owed_jid, owed_seq, owed_fee
    FROM debt_offers WHERE lot = ? AND plate IN (%s)
    ORDER BY plate, exit_time, fee, owed_gate, owed_jid, owed_seq"""
DROP_OFFERS_OF_EXIT = "DELETE FROM debt_offers WHERE lot = ? AND plate = ? AND exit_time = ?"
SETTLED = """SELECT action FROM corrections
    WHERE lot = ? AND gate = ? AND jid = ? AND seq = ? AND action IN ('%s') LIMIT 1""" % (
    "', '".join(schema.SETTLES_OWED))


class Debts:
    """The next-visit path of owed fees, shared by both backends."""

    def debts_of(self, plate, before, limit=DEBTS_MAX):
        """The owed exits of plate before unix time before that are not
        settled and have a fee, oldest first: [(gate, jid, seq, fee)]."""
        return [tuple(row) for row in self._query(DEBTS_OF, (self.lot, plate, before, limit))]

    def offer_debt(self, plate, exit_time, fee, covered, now=None):
        """Keep that a fee answer for plate's exit at exit_time said fee
        (the stay's own plus the debt) covering the owed exits covered
        [(gate, jid, seq, fee)], before the answer goes out; offers older
        than OFFER_KEEP_S go. Committed when it returns."""
        now = time.time() if now is None else now
        rows = [(self.lot, plate, exit_time, fee, gate, jid, seq, owed_fee, now)
                for gate, jid, seq, owed_fee in covered]

        def write(cur):
            cur.execute(self._sql(DROP_OLD_OFFERS), (self.lot, now - OFFER_KEEP_S))
            for row in rows:
                cur.execute(self._sql(INSERT_OFFER), row)
        with self._lock:
            self._transaction(write)

    def _settle_debts(self, cur, batches, new, now):
        """In ingest_many's transaction: settle the owed exits that the new
        online exits of batches paid (or carried, when let out unpaid) by
        matching the offers of their fee answers (the module's docstring).
        new: the identities (gate, jid, seq) stored new in it."""
        new = set(new)
        paying = {}
        for gate, jid, events in batches:
            for event in events:
                key = (gate, jid, event.seq)
                if (key in new and event.kind == record.KIND_EXIT and event.fee > 0
                        and event.fee_source == record.FEE_ONLINE):
                    paying.setdefault((event.plate, event.time, event.fee), (key, event.flags))
        if not paying:
            return
        plates = sorted({plate for plate, _, _ in paying})
        offers = {}
        for start in range(0, len(plates), _IN_CHUNK):
            chunk = plates[start:start + _IN_CHUNK]
            cur.execute(self._sql(OFFERS_OF_PLATES % ", ".join("?" * len(chunk))),
                        [self.lot] + chunk)
            for plate, exit_time, fee, gate, jid, seq, owed_fee in cur.fetchall():
                offers.setdefault((plate, exit_time, fee), []).append((gate, jid, seq, owed_fee))
        for match in sorted(set(offers) & set(paying)):
            (paid_by, flags) = paying[match]
            self._settle_offer(cur, match[0], paid_by, bool(flags & record.FLAG_OWED),
                               offers[match], now)
            cur.execute(self._sql(DROP_OFFERS_OF_EXIT), (self.lot, match[0], match[1]))

    def _settle_offer(self, cur, plate, paid_by, owed_again, covered, now):
        """Settle each owed exit of covered [(gate, jid, seq, fee)] that the
        exit paid_by (gate, jid, seq) paid, or carried if owed_again."""
        paying = "%s/%s/%s" % paid_by
        for gate, jid, seq, owed_fee in covered:
            cur.execute(self._sql(SETTLED), (self.lot, gate, jid, seq))
            found = cur.fetchone()
            if found is None:
                note = ("carried into the fee owed by exit %s" if owed_again
                        else "paid at the next visit, exit %s") % paying
                self._insert_correction(cur, gate, jid, seq, "settled", owed_fee, note,
                                        NEXT_VISIT)
                continue
            log.warning("plate %s paid %d fen owed by %s/%s/%s at exit %s, already %s: "
                        "paid twice", plate, owed_fee, gate, jid, seq, paying, found[0])
            self._insert_audit(cur, NEXT_VISIT, "next-visit-overpaid", {
                "plate": plate, "owed": "%s/%s/%s" % (gate, jid, seq), "fen": owed_fee,
                "exit": paying, "already": found[0], "at": now})

