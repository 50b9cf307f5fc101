import errno
import struct

from parkgate import sntp
from parkgate.compat import ticks_add
from parkgate.sntp import SntpClient

SERVER = ("192.0.2.10", 123)
T = 1717171717                        # 2024-05-31 16:08:37 UTC


class Ticks:
    def __init__(self, start=0):
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, ms):
        self.now = ticks_add(self.now, ms)


class FakeSocket:
    """A non-blocking UDP socket as MicroPython's: readinto returns None
    when nothing is waiting; one datagram per read, cut to the buffer."""

    def __init__(self):
        self.inbox = []
        self.sent = []
        self.send_error = None

    def sendto(self, data, address):
        if self.send_error is not None:
            raise OSError(self.send_error)
        self.sent.append((bytes(data), address))
        return len(data)

    def readinto(self, buf):
        if not self.inbox:
            return None
        data = self.inbox.pop(0)
        n = min(len(buf), len(data))
        buf[0:n] = data[0:n]
        return n

    def nonce(self):
        return self.sent[-1][0][40:48]


class CPythonSocket(FakeSocket):
    """recv_into raising on EAGAIN, as CPython's non-blocking socket."""
    readinto = None

    def recv_into(self, buf):
        n = FakeSocket.readinto(self, buf)
        if n is None:
            raise OSError(errno.EAGAIN)
        return n


class RecvOnlySocket(FakeSocket):
    readinto = None

    def recv(self, size):
        if not self.inbox:
            raise OSError(errno.EAGAIN)
        return self.inbox.pop(0)[:size]


def stamp(unix, ms=0):
    return struct.pack(">II", sntp.unix_to_ntp(unix), ms * 4294967296 // 1000)


def reply(nonce, unix=T, ms=0, first=0x24, stratum=2, received=None, length=48):
    """A server's answer: first byte LI|VN|mode (0x24: LI 0, version 4,
    server), the originate stamp echoing nonce."""
    rx_unix, rx_ms = received if received is not None else (unix, ms)
    packet = bytes((first, stratum, 6, 0xEC)) + bytes(8) + b"GPS\x00" + stamp(unix - 16) + \
        bytes(nonce) + stamp(rx_unix, rx_ms) + stamp(unix, ms)
    return packet + bytes(length - 48) if length >= 48 else packet[:length]


def exchange(sock_class=FakeSocket, start=0, timeout_ms=1000):
    sock = sock_class()
    ticks = Ticks(start)
    client = SntpClient(sock, SERVER, ticks, timeout_ms=timeout_ms)
    assert client.request()
    return sock, ticks, client


def test_request_is_a_48_byte_client_packet_carrying_the_nonce():
    sock, _, client = exchange()
    packet, address = sock.sent[0]
    assert address == SERVER and len(packet) == 48
    assert packet[0] == 0x23                      # LI 0, version 4, mode 3 (client)
    assert packet[1:40] == bytes(39)
    assert packet[40:48] == client._nonce and len(set(packet[40:48])) > 1
    assert client.pending and client.sent == 1
    sock2, _, client2 = exchange()
    assert sock2.nonce() != sock.nonce()          # a fresh nonce per request


def test_a_good_reply_gives_the_server_time_plus_half_the_delay():
    sock, ticks, client = exchange()
    assert client.poll() is None                  # nothing yet
    ticks.advance(300)
    # Held 100 ms by the server: the network delay is 200 ms.
    sock.inbox.append(reply(sock.nonce(), T, ms=900, received=(T, 800)))
    assert client.poll() == (T + 1, 200)          # 900 ms + 100 ms rounds to the next second
    assert not client.pending and client.answers == 1
    assert client.poll() is None


def test_an_exact_packet_decodes():
    sock, ticks, client = exchange()
    ticks.advance(40)
    header = "24 02 06 ec 00000000 00000000 47505300 ea047475 00000000"
    stamps = "ea047485 00000000 ea047485 00000000"    # received, transmitted: T
    packet = bytearray(bytes.fromhex(header.replace(" ", "")) + bytes(8) +
                       bytes.fromhex(stamps.replace(" ", "")))
    packet[24:32] = sock.nonce()
    sock.inbox.append(bytes(packet))
    assert client.poll() == (T, 40)


def test_ntp_eras():
    assert sntp.ntp_to_unix(0x83AA7E80) == 0                          # 1970-01-01
    assert sntp.ntp_to_unix(0xEA047485) == T
    assert sntp.ntp_to_unix(0xFFFFFFFF) == 2085978495                 # 2036-02-07 06:28:15
    assert sntp.ntp_to_unix(0) == 2085978496                          # era 1 begins
    assert sntp.ntp_to_unix(sntp.unix_to_ntp(2208988800)) == 2208988800  # 2040, era 1
    assert sntp.unix_to_ntp(2085978496) == 0


def test_server_addresses():
    assert sntp.server_address("192.168.10.2") == ("192.168.10.2", 123)
    assert sntp.server_address("127.0.0.1:12300") == ("127.0.0.1", 12300)
    for bad in (None, "", "pool.ntp.org", "10.0.0", "10.0.0.256", "10.0.0.1:0",
                "10.0.0.1:70000", "10.0.0.1:x", "1.2.3.4.5", 123, "10..0.1"):
        assert sntp.server_address(bad) is None, bad


def test_an_answer_from_era_1_is_taken():
    later = 2208988800                            # 2040-01-01
    sock, ticks, client = exchange()
    ticks.advance(10)
    sock.inbox.append(reply(sock.nonce(), later))
    assert client.poll() == (later, 10)


def test_bad_replies_are_refused_and_counted():
    sock, ticks, client = exchange()
    nonce = sock.nonce()
    bad = [
        (reply(nonce, length=47), sntp.SHORT),
        (reply(nonce, first=0x23), sntp.NOT_SERVER),             # our own request echoed
        (reply(nonce, first=0x25), sntp.NOT_SERVER),             # broadcast
        (reply(nonce, first=0x14), sntp.VERSION),                # version 2
        (reply(nonce, first=0xE4), sntp.UNSYNCHRONISED),         # LI 3: clock not synchronised
        (reply(nonce, stratum=0), sntp.KISS),
        (reply(nonce, stratum=16), sntp.STRATUM),
        (reply(b"\x00\x01\x02\x03\x04\x05\x06\x07"), sntp.ORIGINATE),  # spoofed
        (reply(nonce, unix=1600000000), sntp.TIME),              # 2020: before EARLIEST_VALID
    ]
    zero = bytearray(reply(nonce))
    zero[40:48] = bytes(8)
    bad.append((bytes(zero), sntp.TIME))
    for packet, reason in bad:
        sock.inbox.append(packet)
        assert client.poll() is None, reason
        assert client.last_refusal == reason
        assert client.pending
    assert client.refused == len(bad) and client.kisses == 1
    # A good reply after them is still taken.
    ticks.advance(20)
    sock.inbox.append(reply(nonce))
    assert client.poll() == (T, 20)


def test_a_longer_reply_is_read_as_its_first_48_bytes():
    sock, ticks, client = exchange()
    sock.inbox.append(reply(sock.nonce(), length=68))    # with a MAC after the header
    assert client.poll() == (T, 0)


def test_a_spoof_then_the_real_reply_in_one_poll():
    sock, ticks, client = exchange()
    ticks.advance(50)
    sock.inbox.append(reply(b"spoofed!", T + 3600))
    sock.inbox.append(reply(sock.nonce(), T))
    assert client.poll() == (T, 50)
    assert client.refused == 1 and client.last_refusal == sntp.ORIGINATE


def test_no_reply_times_out():
    sock, ticks, client = exchange(timeout_ms=1000)
    ticks.advance(1000)
    assert client.poll() is None and client.pending    # not past the timeout yet
    ticks.advance(1)
    assert client.poll() is None and not client.pending and client.timeouts == 1
    # The reply arrives late: dropped, never returned.
    sock.inbox.append(reply(sock.nonce()))
    assert client.poll() is None and client.late == 1 and client.answers == 0


def test_a_reply_that_comes_too_late_is_not_taken():
    sock, ticks, client = exchange(timeout_ms=1000)
    ticks.advance(1500)
    sock.inbox.append(reply(sock.nonce()))
    assert client.poll() is None
    assert not client.pending and client.answers == 0 and client.timeouts == 1


def test_a_stale_reply_to_an_earlier_request_is_refused():
    sock, ticks, client = exchange()
    old = sock.nonce()
    ticks.advance(1001)
    assert client.poll() is None and not client.pending
    assert client.request()
    sock.inbox.append(reply(old))                 # the first request's answer, late
    assert client.poll() is None and client.last_refusal == sntp.ORIGINATE
    sock.inbox.append(reply(sock.nonce()))
    assert client.poll() == (T, 0)


def test_request_drops_what_was_waiting():
    sock, ticks, client = exchange()
    sock.inbox.append(b"junk")
    sock.inbox.append(b"more junk")
    client.request()
    assert sock.inbox == [] and client.late == 2


def test_a_send_error_is_counted_and_nothing_is_pending():
    sock = FakeSocket()
    sock.send_error = errno.EHOSTUNREACH
    client = SntpClient(sock, SERVER, Ticks())
    assert client.request() is False
    assert client.send_errors == 1 and not client.pending
    assert client.poll() is None


def test_ticks_wrap_between_request_and_reply():
    # Sent 100 ms before ticks_ms() wraps (2**30 on a 32-bit port).
    sock, ticks, client = exchange(start=ticks_add(0, -100))
    ticks.advance(300)
    sock.inbox.append(reply(sock.nonce()))
    assert client.poll() == (T, 300)
    # And a timeout across the wrap.
    sock, ticks, client = exchange(start=ticks_add(0, -500), timeout_ms=1000)
    ticks.advance(900)
    assert client.poll() is None and client.pending
    ticks.advance(200)
    assert client.poll() is None and not client.pending and client.timeouts == 1


def test_cpython_and_recv_only_sockets():
    for cls in (CPythonSocket, RecvOnlySocket):
        sock, ticks, client = exchange(cls)
        assert client.poll() is None
        ticks.advance(5)
        sock.inbox.append(reply(sock.nonce()))
        assert client.poll() == (T, 5), cls


def test_service_schedules_requests_and_retries():
    sock = FakeSocket()
    ticks = Ticks()
    client = SntpClient(sock, SERVER, ticks, timeout_ms=1000, interval_ms=60000,
                        retry_ms=5000)
    assert client.service(ticks()) is None and len(sock.sent) == 1    # at once
    ticks.advance(20)
    sock.inbox.append(reply(sock.nonce()))
    assert client.service(ticks()) == (T, 20)
    ticks.advance(59000)
    assert client.service(ticks()) is None and len(sock.sent) == 1
    ticks.advance(1000)
    client.service(ticks())
    assert len(sock.sent) == 2                    # interval_ms after the answer
    ticks.advance(1001)
    assert client.service(ticks()) is None and not client.pending    # timed out
    ticks.advance(4999)
    client.service(ticks())
    assert len(sock.sent) == 2
    ticks.advance(1)
    client.service(ticks())
    assert len(sock.sent) == 3                    # retried after retry_ms
    ticks.advance(1001)
    client.service(ticks())                       # times out again: the wait doubles
    ticks.advance(9999)
    client.service(ticks())
    assert len(sock.sent) == 3
    ticks.advance(1)
    client.service(ticks())
    assert len(sock.sent) == 4


def test_polling_with_nothing_waiting_allocates_nothing():
    try:
        import micropython  # noqa: F401
        import gc
        gc.mem_alloc
    except (ImportError, AttributeError):
        return                                    # CPython: nothing to measure
    sock, ticks, client = exchange()
    poll = client.poll
    poll()
    gc.collect()
    before = gc.mem_alloc()
    for _ in range(100):
        poll()
    assert gc.mem_alloc() - before == 0, gc.mem_alloc() - before
