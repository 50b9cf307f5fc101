# SNTP client (RFC 4330 / RFC 5905 packet format), pure and non-blocking:
# the board passes in an already-made non-blocking UDP socket, the server's
# address in the form its sockets take and its ticks_ms. One request is a
# 48-byte datagram; poll() on every idle pass of the gate loop reads at most
# a few datagrams into a preallocated buffer and never waits.
# Rules: firmware/docs/clocks.md.
import os

from parkgate.clock import EARLIEST_VALID
from parkgate.compat import const, ticks_add, ticks_diff

PACKET_BYTES = const(48)
_CLIENT_FIRST_BYTE = const(0x23)   # LI 0, version 4, mode 3 (client)
_MODE_SERVER = const(4)
_LI_UNSYNCHRONISED = const(3)
_ORIGINATE = const(24)             # offsets of the 64-bit timestamps
_RECEIVE = const(32)
_TRANSMIT = const(40)
_READS_PER_POLL = const(4)         # datagrams taken from the socket per poll()
# Seconds from 1900-01-01 (the NTP epoch) to 1970-01-01.
NTP_TO_UNIX = 2208988800
# The 32-bit NTP seconds field wraps on 2036-02-07 (era 1 begins). A field
# with its top bit clear is taken as era 1: this maps the field onto
# 1968-01-20 .. 2104-02-26 (RFC 4330, section 3), and any answer before
# EARLIEST_VALID (2024) is refused anyway.
_ERA1_TO_UNIX = 4294967296 - 2208988800

# Why the last reply was refused (SntpClient.last_refusal), for the log.
SHORT = "short"
NOT_SERVER = "mode"
UNSYNCHRONISED = "leap"
KISS = "kiss"               # stratum 0: a kiss-o'-death (the server says back off)
STRATUM = "stratum"
VERSION = "version"
ORIGINATE = "originate"     # not an answer to our request: spoofed or stale
TIME = "time"               # transmit time zero or before 2024


def _u32(buf, at):
    # A long int on a 32-bit port for values >= 2**30: only once per reply.
    return (buf[at] << 24) | (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3]


def _fraction_ms(buf, at):
    # The top 10 bits of the 32-bit fraction, in ms (small ints only).
    return (((buf[at] << 2) | (buf[at + 1] >> 6)) * 1000) >> 10


def server_address(spec, port=123):
    """(ip, port) of an NTP server given as "a.b.c.d" or "a.b.c.d:port"
    (site.json "ntp"); None for anything else: a host name would need a
    DNS query, which blocks."""
    if not isinstance(spec, str):
        return None
    host, _, rest = spec.partition(":")
    parts = host.split(".")
    if len(parts) != 4:
        return None
    for part in parts:
        if not part or len(part) > 3 or not part.isdigit() or int(part) > 255:
            return None
    if rest:
        if len(rest) > 5 or not rest.isdigit() or not 0 < int(rest) < 65536:
            return None
        port = int(rest)
    return host, port


def ntp_to_unix(seconds32):
    """Unix seconds of a 32-bit NTP seconds field (era 0 or 1, see above)."""
    if seconds32 & 0x80000000:
        return seconds32 - NTP_TO_UNIX
    return seconds32 + _ERA1_TO_UNIX


def unix_to_ntp(unix_seconds):
    """The 32-bit NTP seconds field of a unix time (the era is dropped)."""
    return (unix_seconds + NTP_TO_UNIX) & 0xFFFFFFFF


def build_request(buf, nonce):
    """Fill buf (48 bytes) with a client request whose transmit timestamp
    is the 8 bytes of nonce; every other field is zero."""
    for i in range(PACKET_BYTES):
        buf[i] = 0
    buf[0] = _CLIENT_FIRST_BYTE
    for i in range(8):
        buf[_TRANSMIT + i] = nonce[i]
    return buf


def check_reply(buf, n, nonce):
    """None if the n bytes in buf are a usable server reply to the request
    that carried nonce, else the reason it is not (one of the names above)."""
    if n < PACKET_BYTES:
        return SHORT
    first = buf[0]
    if first & 7 != _MODE_SERVER:
        return NOT_SERVER
    version = (first >> 3) & 7
    if version < 3 or version > 4:
        return VERSION
    if first >> 6 == _LI_UNSYNCHRONISED:
        return UNSYNCHRONISED
    stratum = buf[1]
    if stratum == 0:
        return KISS
    if stratum > 15:
        return STRATUM
    for i in range(8):
        if buf[_ORIGINATE + i] != nonce[i]:
            return ORIGINATE
    if not (buf[_TRANSMIT] | buf[_TRANSMIT + 1] | buf[_TRANSMIT + 2] | buf[_TRANSMIT + 3]):
        return TIME
    if ntp_to_unix(_u32(buf, _TRANSMIT)) < EARLIEST_VALID:
        return TIME
    return None


def reply_time(buf, round_trip_ms):
    """(unix seconds, network delay ms) from a checked reply received
    round_trip_ms after its request was sent: the server's transmit time
    plus half the delay, rounded to the second. The delay is the round trip
    less the time the server says it held the request (transmit - receive
    timestamps), when that is between 0 and the round trip."""
    hold_ms = (_u32(buf, _TRANSMIT) - _u32(buf, _RECEIVE)) * 1000 + \
        _fraction_ms(buf, _TRANSMIT + 4) - _fraction_ms(buf, _RECEIVE + 4)
    delay = round_trip_ms
    if 0 <= hold_ms <= round_trip_ms:
        delay = round_trip_ms - hold_ms
    unix = ntp_to_unix(_u32(buf, _TRANSMIT))
    return unix + (_fraction_ms(buf, _TRANSMIT + 4) + delay // 2 + 500) // 1000, delay


def _nonce():
    # 8 unpredictable bytes, so an off-path sender cannot forge the
    # originate timestamp a reply must echo.
    try:
        return os.urandom(8)
    except (AttributeError, NotImplementedError):
        import random
        return bytes(random.getrandbits(8) for _ in range(8))


class SntpClient:
    """One SNTP exchange at a time over sock (non-blocking UDP).

    request() sends a request (never blocks: a send error is counted in
    send_errors); poll() returns None until a valid reply arrived, then
    (unix_seconds, delay_ms) once. A reply that fails check_reply is
    ignored and counted (refused, last_refusal); after timeout_ms without a
    valid reply the exchange is given up (pending False, timeouts counted)
    and poll() returns None. Datagrams arriving while nothing is pending
    are read and dropped (late).

    service(now) runs the schedule: a request every interval_ms, retried
    after retry_ms (doubling up to interval_ms) when one fails; it returns
    what poll() returns."""

    def __init__(self, sock, address, ticks_ms, timeout_ms=1000,
                 interval_ms=3600000, retry_ms=30000):
        self.sock = sock
        self.address = address
        self.ticks_ms = ticks_ms
        self.timeout_ms = timeout_ms
        self.interval_ms = interval_ms
        self.retry_ms = retry_ms
        self._out = bytearray(PACKET_BYTES)
        self._in = bytearray(PACKET_BYTES)
        self._in_mv = memoryview(self._in)
        self._nonce = bytes(8)
        # No allocation per poll where the socket can read into a buffer:
        # readinto (MicroPython: None when nothing is waiting), recv_into
        # (CPython), else recv.
        self._readinto = getattr(sock, "readinto", None) or getattr(sock, "recv_into", None)
        self.pending = False
        self._sent_at = 0
        self._next_at = ticks_ms()      # the first service() sends at once
        self._backoff_ms = retry_ms
        self.sent = 0
        self.answers = 0
        self.refused = 0
        self.late = 0
        self.timeouts = 0
        self.send_errors = 0
        self.kisses = 0
        self.last_refusal = None
        self.last_error = None

    def request(self):
        """Send one request; True if it went out. Drops what is waiting."""
        self._drain()
        self._nonce = _nonce()
        build_request(self._out, self._nonce)
        try:
            self.sock.sendto(self._out, self.address)
        except OSError as exc:
            self.send_errors += 1
            self.last_error = exc
            self.pending = False
            return False
        self.sent += 1
        self._sent_at = self.ticks_ms()
        self.pending = True
        return True

    def _read(self):
        # Bytes of one datagram in self._in; 0 when nothing is waiting.
        try:
            if self._readinto is not None:
                return self._readinto(self._in_mv) or 0
            data = self.sock.recv(PACKET_BYTES)
        except OSError:
            return 0            # EAGAIN (CPython), or an ICMP error reported late
        n = len(data) if data else 0
        self._in[0:n] = data[0:n]
        return n

    def _drain(self):
        for _ in range(_READS_PER_POLL):
            if not self._read():
                return
            self.late += 1

    def poll(self):
        """(unix_seconds, delay_ms) once a valid reply is in, else None."""
        if not self.pending:
            self._drain()
            return None
        for _ in range(_READS_PER_POLL):
            n = self._read()
            if not n:
                break
            now = self.ticks_ms()
            reason = check_reply(self._in, n, self._nonce)
            if reason is not None:
                self.refused += 1
                self.last_refusal = reason
                if reason == KISS:
                    self.kisses += 1
                continue
            round_trip = ticks_diff(now, self._sent_at)
            if round_trip > self.timeout_ms:
                break           # ours, but too late to be trusted: times out below
            self.pending = False
            self.answers += 1
            return reply_time(self._in, round_trip)
        if ticks_diff(self.ticks_ms(), self._sent_at) > self.timeout_ms:
            self.pending = False
            self.timeouts += 1
        return None

    def service(self, now):
        """The schedule and the exchange in one call for the gate loop."""
        if self.pending:
            result = self.poll()
            if result is not None:
                self._backoff_ms = self.retry_ms
                self._next_at = ticks_add(now, self.interval_ms)
            elif not self.pending:
                self._retry(now)
            return result
        if ticks_diff(now, self._next_at) >= 0:
            if not self.request():
                self._retry(now)
        else:
            self._drain()
        return None

    def _retry(self, now):
        self._next_at = ticks_add(now, self._backoff_ms)
        self._backoff_ms = min(self._backoff_ms * 2, self.interval_ms)
