# The gate's side of its conversation with the lot server (MQTT, see
# firmware/docs/mqtt.md): the topics, the link and the journal's uplink,
# status, the clock and catch-up asks, the tariff on flash, and a handler
# for every downlink message (an update over the air: parkgate.ota_lane,
# made only once one is under way). parkgate.app's Gate is built on it.
import gc
import json
import os

from parkgate import downlink, member_update, members, record, sign
from parkgate import tariff as tariff_engine
from parkgate.clock import EARLIEST_VALID, Q_NTP, Q_SERVER
from parkgate.compat import const, ticks_add, ticks_diff
from parkgate.downlink import Refused
from parkgate.link import Link
from parkgate.member_install import _remove   # the one remove-if-there of the gate's files
from parkgate.uplink import Uplink

_CLOCK_MAX_ROUND_TRIP_MS = const(2000)
_CATCHUP_PAGES_MAX = const(64)  # pages of missed entries asked after a reconnect
_CATCHUP_MARGIN_S = const(300)  # asked from this long before the link went down

try:
    from fw_version import VERSION as FW_VERSION   # frozen by the image's build
except ImportError:
    FW_VERSION = 0


class GateLink:
    """What the gate says to and hears from the lot server. Gate (parkgate.app)
    sets board, log, site, gate_id, key, lot, fs, lane, tariff, clock,
    journal, display, member_store, exit, _last_command and ota (with
    _ota_lane() making it), then calls _start_link(site)."""

    ota = None   # parkgate.ota_lane.OtaLane once an update is under way (an
    #              instance attribute only then: no heap for it before)

    def _start_link(self, site):
        """The topics, the MQTT link and the uplink of the journal."""
        board = self.board
        prefix = "pg/%s/%s/" % (self.lot, self.gate_id)
        self._prefix = prefix.encode()
        self._topic_events = prefix + "up/events"
        self._topic_fee = prefix + "up/fee"
        self._topic_status = prefix + "status"
        self._topic_presence = ("pg/%s/server/status" % self.lot).encode()
        self._topic_clock_ask = prefix + "up/clock"
        self._topic_catchup_ask = prefix + "up/catchup"
        self._clock_request = 0
        self._clock_asked_at = None
        self._clock_due = 0
        self._catchup_request = 0
        self._catchup = None         # [request, since, pages asked] while catching up
        self._down_since = 0         # unix time the link went down (0: not since boot)
        self._topic_refused = prefix + "up/refused"
        # None: no SNTP server configured (then parkgate.sntp, which a
        # board's ntp_server() imports to parse it, is never loaded)
        self._ntp_address = board.ntp_server(site) if site.get("ntp") else None
        self.sntp = None
        make_client, sockets = board.mqtt(site["socket_timeout_ms"])
        self.link = Link(make_client, sockets, "pg-%s-%s" % (self.lot, self.gate_id),
                         site["broker"], site.get("port", 1883), board.ticks_ms,
                         keepalive_s=site["keepalive_s"],
                         backoff_max_ms=site["backoff_max_ms"], log=self.log,
                         network_up=board.network_up,
                         user=site.get("mqtt_user"), password=site.get("mqtt_password"))
        self.link.subscribe(prefix + "down/#")
        if self.exit is not None:
            # Entries of the other lanes, so exits can be charged offline,
            # and whether the lot server is there to ask.
            self.link.subscribe("pg/%s/+/up/events" % self.lot)
            self.link.subscribe("pg/%s/server/status" % self.lot)
        self.link.set_will(self._topic_status, '{"on":0}')
        self.link.on_message = self._on_message
        self.link.on_up = self._on_link_up
        self.link.on_down = self._on_link_down
        self.uplink = Uplink(self.journal, self.link, self.gate_id, self._topic_events,
                             batch=site["uplink_batch"], window=site["uplink_window"],
                             log=self.log)
        try:
            os.stat(self.fs + "/ota")   # the OTA record: a download, or a new image's probation
        except OSError:
            return
        self._ota_lane()

    def _load_tariff(self):
        path = self.fs + "/tariff.json"
        _remove(path + ".new")   # a push cut short by a power cut
        try:
            with open(path) as f:
                return tariff_engine.loads(f.read())
        except OSError:
            self.log("TARIFF missing: exits are charged only online")
        except tariff_engine.TariffError as exc:
            self.log("TARIFF refused %s" % exc)
        return None

    def _install_tariff(self, envelope):
        """A signed tariff table from the lot server: check, write the new
        file, then switch to it (a power cut leaves the old or the new)."""
        applied = self.tariff.version if self.tariff else 0
        try:
            if not self.key:
                raise sign.SignatureError("no downlink key configured")
            body = sign.verify(self.key, envelope, "tariff", self.gate_id, applied)
            table = tariff_engine.loads(body)
            if table.version != envelope["v"]:
                raise sign.SignatureError("table version %d, envelope %d" % (
                    table.version, envelope["v"]))
        except (sign.SignatureError, tariff_engine.TariffError, MemoryError) as exc:
            self._refuse("tariff", envelope, exc)
            return
        path = self.fs + "/tariff.json"
        try:
            with open(path + ".new", "w") as f:
                f.write(body)
            os.rename(path + ".new", path)
        except OSError as exc:   # a full filesystem: the old table stays
            _remove(path + ".new")
            self._refuse("tariff", envelope, "flash: %r" % (exc,))
            return
        self.tariff = table
        if self.exit is not None:
            self.exit.tariff = table
        self.log("TARIFF installed version=%d" % table.version)
        self._publish_status()

    def _on_members(self, envelope):
        """One signed part of a member list update (or a small update in one
        envelope): stored to flash at once; the install runs in slices
        while the lane is idle (member_update.MemberStore.step)."""
        try:
            self.member_store.offer(envelope, self.key, self.gate_id)
        except member_update.Refused as exc:
            raise Refused(str(exc))

    def _on_image(self, envelope):
        lane = self._ota_lane()
        why = lane.offer(envelope)
        if why:
            self.ota = lane.unload()    # a refused offer leaves no OTA code on the heap
            raise Refused(why)

    def _on_chunk(self, frame):
        if self.ota is None:
            raise Refused("no download under way")
        self.ota.chunk(frame, self._lane_idle(), self.board.ticks_ms())

    def _on_reboot(self, envelope):
        """A signed reboot into the staged image (body: its version),
        checked against the command counter as open and setclock."""
        if not self.key:
            raise sign.SignatureError("no downlink key configured")
        body = sign.verify(self.key, envelope, "reboot", self.gate_id, self._last_command)
        self._last_command = envelope["v"]
        why = self.ota.reboot(body) if self.ota else "version %s is not staged: nothing is" % body
        self._publish_status()
        if why:
            raise Refused(why)

    def _refuse(self, kind, envelope, why):
        version = envelope.get("v") if isinstance(envelope, dict) else None
        self.log("REFUSED %s v=%s: %s" % (kind, version, why))
        self.link.publish(self._topic_refused, json.dumps(
            {"k": kind, "v": version, "why": str(why)}))

    def _on_command(self, envelope):
        """A signed remote open: run at most once, and never after its
        expiry (which must be near: an operator does not want a barrier
        opening minutes after asking)."""
        try:
            if not self.key:
                raise sign.SignatureError("no downlink key configured")
            if not self.clock.valid():
                raise sign.SignatureError("no trustworthy time to check the expiry")
            now = self.clock.now()
            sign.verify(self.key, envelope, "open", self.gate_id, self._last_command, now)
            if not envelope.get("x"):
                raise sign.SignatureError("a command must carry an expiry")
            if envelope["x"] - now > self.site["command_max_s"]:
                raise sign.SignatureError("expiry %d s away, at most %d allowed" % (
                    envelope["x"] - now, self.site["command_max_s"]))
        except sign.SignatureError as exc:
            self._refuse("open", envelope, exc)
            return
        self._last_command = envelope["v"]
        self.log("OPEN remote command v=%d" % envelope["v"])
        self.display.show("opened by the lot office")
        self._open_barrier()
        self._publish_status()   # "cv": the command run

    def _on_set_clock(self, envelope):
        """A signed set-clock: ask the lot server for the time now, through
        the round-trip-checked clock ask. It carries no time and no expiry
        (the clock it would be checked by may be the wrong one), so a replay
        only makes the gate ask again."""
        if not self.key:
            raise sign.SignatureError("no downlink key configured")
        sign.verify(self.key, envelope, "setclock", self.gate_id, self._last_command)
        self._last_command = envelope["v"]
        self.log("CLOCK asked by the lot office v=%d" % envelope["v"])
        self._ask_clock()
        self._publish_status()

    # --- the link -----------------------------------------------------------
    def _on_link_up(self):
        self.uplink.reset()
        self._publish_status()
        self._ask_clock()
        if self.exit is not None:
            self.exit.link(True, self.board.ticks_ms())
            # The entries other lanes journaled while this one was away.
            since = self._down_since - _CATCHUP_MARGIN_S if self._down_since else 0
            self._catchup_request = (self._catchup_request + 1) & 0xFFFF
            self._catchup = [self._catchup_request, since, 0]
            self._ask_catchup(0)

    def _on_link_down(self):
        if self.clock.valid():
            self._down_since = self.clock.now()
        self._catchup = None
        if self.exit is not None:
            self.exit.link(False, self.board.ticks_ms())

    def _service_ntp(self, now):
        """SNTP, one non-blocking step per idle pass, over a socket made
        once the network is up."""
        if self.sntp is None:
            if not self.board.network_up():
                return
            sock = self.board.udp_socket()
            if sock is None:
                return
            from parkgate.sntp import SntpClient
            self.sntp = SntpClient(sock, self._ntp_address, self.board.ticks_ms)
        answer = self.sntp.service(now)
        if answer is not None:
            was = self.clock.now()
            self.clock.set(answer[0], Q_NTP)
            self.log("CLOCK set by NTP: step %d s, delay %d ms" % (
                self.clock.now() - was, answer[1]))

    def _ask_clock(self):
        self._clock_request = (self._clock_request + 1) & 0xFFFF
        self._clock_asked_at = now = self.board.ticks_ms()
        self._clock_due = ticks_add(now, self.site["clock_resync_s"] * 1000)
        self.link.publish(self._topic_clock_ask, '{"r":%d}' % self._clock_request)

    def _ask_catchup(self, cursor):
        catchup = self._catchup
        catchup[2] += 1
        self.link.publish(self._topic_catchup_ask, '{"r":%d,"s":%d,"c":%d}' % (
            catchup[0], catchup[1], cursor))

    def _on_catchup(self, message):
        catchup = self._catchup
        if catchup is None or message["r"] != catchup[0]:
            raise Refused("r: %r is not the catch-up asked for" % message["r"])
        heard = 0
        for wire in message["e"]:
            try:
                event = record.from_wire(wire)
            except record.RecordError:
                continue
            if event.kind == record.KIND_ENTRY:
                self.lane.note(event)
                heard += 1
        cursor = message.get("c")
        self.log("CATCHUP page=%d entries=%d inside=%d" % (catchup[2], heard,
                                                           len(self.lane.inside)))
        if cursor is None or catchup[2] >= _CATCHUP_PAGES_MAX:
            self._catchup = None
        else:
            self._ask_catchup(cursor)

    def _on_clock(self, message):
        """Set the clock from the lot server's answer if it came back fast
        enough to be trusted to within a second."""
        if message["r"] != self._clock_request or self._clock_asked_at is None:
            raise Refused("r: %r is not the time asked for" % message["r"])
        round_trip = ticks_diff(self.board.ticks_ms(), self._clock_asked_at)
        self._clock_asked_at = None
        server_time = message["t"]
        if server_time < EARLIEST_VALID or round_trip > _CLOCK_MAX_ROUND_TRIP_MS:
            raise Refused("t=%d rtt=%d ms: not a time to set" % (server_time, round_trip))
        was = self.clock.now()
        self.clock.set(server_time + (round_trip + 500) // 2000, Q_SERVER)
        self.log("CLOCK set from lot server: step %d s, rtt %d ms" % (
            self.clock.now() - was, round_trip))

    def _publish_status(self):
        stats = self.journal.stats()
        ota = self.ota
        gc.collect()   # so that "heap" is what is really free
        status = {"on": 1, "jid": self.journal.journal_id, "seq": self.journal.next_seq,
                  "acked": self.journal.acked, "backlog": stats["pending"],
                  "heap": self.board.free_heap(), "flash": self.board.free_flash(self.fs),
                  "clock": self.clock.quality,
                  "tv": self.tariff.version if self.tariff else None,
                  "mv": self.member_store.current.version if self.member_store.current else None,
                  "cv": self._last_command, "fw": FW_VERSION,
                  "ota": ota.status() if ota else None, "rb": ota.rb if ota else None}
        sent = self.link.publish(self._topic_status, json.dumps(status), retain=True)
        self._last_status = self.board.ticks_ms()
        self.log("STATUS backlog=%d heap=%d" % (stats["pending"], status["heap"]))
        if sent and ota is not None and ota.status_published():
            self.ota = ota = ota.unload()   # proven: its code off the heap; the status says so
            self._publish_status()

    def _kind_of(self, topic):
        """The downlink kind a topic carries; None for a message that is
        not for the gate (its own uplinks, heard back through the other
        lanes' subscription); Refused for a down/ topic it does not know."""
        if topic.startswith(self._prefix):
            leaf = topic[len(self._prefix):]
            if not leaf.startswith(b"down/"):
                return None
            kind = downlink.kind_of(leaf[5:].decode())
            if kind is None:
                raise Refused("no such downlink topic")
            return kind
        if topic == self._topic_presence:
            return downlink.PRESENCE
        if topic.endswith(b"/up/events"):
            return downlink.EVENTS
        return None

    def _on_message(self, topic, payload):
        """Every message from the broker comes here, inside umqtt's
        check_msg: nothing may escape, or the link would drop. A message
        the gate cannot take is refused with its reason on up/refused."""
        kind = None
        message = None
        try:
            kind = self._kind_of(topic)
            if kind is None:
                return
            if payload is None:
                raise Refused("%d bytes do not fit the heap" % self.link.dropped_bytes())
            message = downlink.decode(kind, payload)
            downlink.check(kind, message)
            self._HANDLERS[kind](self, message)
        except (Refused, sign.SignatureError, members.MemberError) as exc:
            self._refuse(kind or "?", message, exc)
        except Exception as exc:   # a fault in a handler must not cost the link
            self._refuse(kind or "?", message, "fault: %r" % (exc,))

    def _on_ack(self, message):
        if not self.uplink.on_ack(message):
            raise Refused("ack j=%d %d..%d matches no batch sent" % (
                message["j"], message["f"], message["l"]))
        self.log("ACK upto=%d" % self.journal.acked)

    def _on_fee_answer(self, message):
        if self.exit is None:
            raise Refused("an entry lane asks no fees")
        if not self.exit.fee_answer(message["r"], message["p"], message["fee"],
                                    message.get("tv") or 0, message.get("et"),
                                    self.board.ticks_ms()):
            raise Refused("r=%d: no such fee query outstanding" % message["r"])

    def _on_paid(self, message):
        if self.exit is None or not self.exit.paid(message["p"], message["fee"], "lot server",
                                                   self.board.ticks_ms()):
            raise Refused("no car waiting to pay %d for %s" % (message["fee"], message["p"]))

    def _on_presence(self, message):
        online = message["on"] == 1
        if self.exit is None or self.exit.server == online:
            return
        self.log("LOT server %s" % ("online" if online else "gone"))
        if self.exit is not None:
            self.exit.presence(online, self.board.ticks_ms())

    def _on_peer_events(self, message):
        if message["g"] == self.gate_id:
            return
        for wire in message["e"]:
            try:
                self.lane.note(record.from_wire(wire))
            except record.RecordError:
                pass

    _HANDLERS = {
        downlink.ACK: _on_ack,
        downlink.FEE: _on_fee_answer,
        downlink.PAID: _on_paid,
        downlink.CLOCK: _on_clock,
        downlink.TARIFF: _install_tariff,
        downlink.MEMBERS: _on_members,
        downlink.OPEN: _on_command,
        downlink.SETCLOCK: _on_set_clock,
        downlink.CATCHUP: _on_catchup,
        downlink.EVENTS: _on_peer_events,
        downlink.PRESENCE: _on_presence,
        downlink.IMAGE: _on_image,
        downlink.CHUNK: _on_chunk,
        downlink.REBOOT: _on_reboot,
    }
