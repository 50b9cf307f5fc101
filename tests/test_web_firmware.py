"""The operator's Firmware page (lot/web/firmware.py, firmware_view.py)
through uvicorn: each gate's running version, download progress and
rollbacks read from the status the bridge stored; the image store; the
offer, reboot and cancel forms written to the lot's update plan; only a
manager (the role that pushes tariffs) may change it, and only with the
CSRF token; a bad time of day, an unknown image version or gate is
refused with a clear error and changes nothing."""
import hashlib

import pytest

from parkgate_tools.lot.images import ImageStore
from parkgate_tools.lot.operator_page import OperatorPage
from parkgate_tools.lot.ota_plan import OtaPlan
from parkgate_tools.lot.store import Store
from parkgate_tools.lot.web.firmware_view import progress_text
from web_client import PASSWORD, WebClient, add_user

T0 = 1795564800                  # 2026-11-25 08:00 UTC+8


def image_bytes(version):
    return bytes([version]) * (600000 + version)


@pytest.fixture
def lot(tmp_path):
    """(page, store, plan): gates in-1 (v6, downloading v7), out-1 (v6,
    rolled back v5 and then v7, which it was to reboot into at 03:00) and
    ex-1 (never seen); images v6 and v7; users boss (manager) and att
    (attendant). The lot's real ImageStore and OtaPlan in tmp_path."""
    store = Store(str(tmp_path / "lot.sqlite"), "L")
    store.record_status("in-1", {"on": 1, "fw": 6, "ota": [7, 120, 150, "dl"], "rb": None})
    store.record_status("out-1", {"on": 1, "fw": 6, "ota": None, "rb": 7})
    images = ImageStore(str(tmp_path / "images"))
    images.add(image_bytes(6), 6, clock=lambda: T0 - 7200)
    images.add(image_bytes(7), 7, "<fees fix>", clock=lambda: T0 - 3600)
    plan = OtaPlan(str(tmp_path / "ota"), clock=lambda: T0)
    plan.offer(["out-1"], 5, "manual")
    plan.heard("out-1", {"fw": 6, "ota": None, "rb": 5})
    plan.offer(["out-1"], 7, "03:00")
    plan.heard("out-1", {"fw": 6, "ota": None, "rb": 7})
    assert plan.plan("out-1")["state"] == "rolled back"
    page = OperatorPage(store, "L", lambda: None, clock=lambda: T0, duty=1, aside=False,
                        images=images, ota_plan=OtaPlan(str(tmp_path / "ota")),
                        gate_ids=("in-1", "out-1", "ex-1")).start()
    add_user(store, "boss", "manager")
    add_user(store, "att", "attendant")
    yield page, store, plan
    page.stop()
    store.close()


def client_of(page, name):
    client = WebClient(page.url)
    assert client.login(name, PASSWORD) == 200
    client.get("firmware")           # its forms' CSRF token
    return client


def row(html, gate):
    """The text of gate's row of the gates table."""
    return html.split('<tr class="gate" data-gate="%s">' % gate)[1].split("</tr>")[0]


@pytest.mark.parametrize("ota, text", [
    ([7, 120, 150, "dl"], "v7: 120/150 blocks (80 %), downloading"),
    ([7, 150, 150, "ck"], "v7: 150/150 blocks (100 %), reading back"),
    ([7, 150, 150, "staged"], "v7: 150/150 blocks (100 %), staged, waiting for the reboot"),
    ([7, 0, 0, "trial"], "v7: on trial"),
    (None, None)])
def test_the_progress_reads_as_the_operator_wants(ota, text):
    assert progress_text(ota) == text


@pytest.mark.parametrize("ota", [[7, 1, 2], [7, -1, 2, "dl"], [7, 1, 2, "zz"], "7",
                                 [7, 1.5, 2, "dl"]])
def test_a_progress_the_gate_garbled_says_so(ota):
    assert progress_text(ota).startswith("unreadable progress: ")


def test_the_page_shows_versions_progress_and_rollbacks_from_the_stored_statuses(lot):
    page, store, plan = lot
    att = client_of(page, "att")
    status, _, html = att.get("firmware")
    assert status == 200 and '<a href="/firmware">firmware</a>' in html
    downloading = row(html, "in-1")
    assert '<td class="fw">v6' in downloading
    assert "v7: 120/150 blocks (80 %), downloading" in downloading
    rolled = row(html, "out-1")
    assert '<td class="rb"><strong>v7</strong> v5, v7</td>' in rolled
    assert "v7, reboot at 03:00 (lot time): <strong>rolled back</strong>" in rolled
    assert '<td class="fw">unknown' in row(html, "ex-1")
    alert = html.split('<section id="rollbacks" role="alert">')[1].split("</section>")[0]
    assert "<strong>out-1 rolled back v7</strong>: running v6</li>" in alert
    assert "<strong>out-1 rolled back v5</strong>: running v6 (earlier" in alert
    assert "in-1" not in alert
    images = html.split('id="images"')[1]
    assert images.index('data-version="7"') < images.index('data-version="6"')   # newest first
    sha = hashlib.sha256(image_bytes(7)).hexdigest()[:12]
    assert "<td>600007</td><td><code>%s</code></td><td>2026-11-25 07:00:00</td>" \
           "<td>&lt;fees fix&gt;</td>" % sha in images
    assert 'action="/firmware/' not in html           # an attendant sees no forms
    store.record_status("in-1", {"on": 1, "fw": 7, "ota": [7, 0, 0, "trial"], "rb": None})
    downloading = row(att.get("firmware")[2], "in-1")
    assert '<td class="fw">v7 <strong class="trial">on trial</strong>' in downloading
    doc = att.get_json("api/firmware")
    assert [(g["gate"], g["fw"], g["rb"]) for g in doc["gates"]] == [
        ("ex-1", None, None), ("in-1", 7, None), ("out-1", 6, 7)]


def test_the_offer_reboot_and_cancel_forms_write_the_plan(lot):
    page, store, plan = lot
    boss = client_of(page, "boss")
    html = boss.get("firmware")[2]
    assert 'action="/firmware/offer"' in row(html, "in-1")
    offer = {"target": "gate", "gate": "in-1", "version": "7", "reboot": "at", "at": "03:30"}
    status, _, html = boss.post("firmware/offer", offer)
    assert status == 200 and "<h1>Firmware</h1>" in html              # after the 303
    assert (plan.plan("in-1")["version"], plan.plan("in-1")["reboot"]) == (7, "03:30")
    assert plan.plan("ex-1") is None
    assert boss.post("firmware/reboot", {"target": "gate", "gate": "in-1", "when": "now",
                                         "at": ""})[0] == 200
    assert plan.plan("in-1")["reboot"] == "now"
    assert boss.post("firmware/offer", {"target": "all", "version": "6", "reboot": "manual",
                                        "at": ""})[0] == 200
    assert {g: (p["version"], p["reboot"]) for g, p in plan.plans().items()} == {
        "in-1": (6, "manual"), "out-1": (6, "manual"), "ex-1": (6, "manual")}
    assert boss.post("firmware/reboot", {"target": "all", "when": "at", "at": "23:59"})[0] == 200
    assert {p["reboot"] for p in plan.plans().values()} == {"23:59"}
    assert boss.post("firmware/cancel", {"target": "gate", "gate": "ex-1"})[0] == 200
    assert plan.plan("ex-1")["state"] == "cancelled" and plan.plan("in-1")["state"] == "offered"
    assert boss.post("firmware/cancel", {"target": "all"})[0] == 200
    assert {p["state"] for p in plan.plans().values()} == {"cancelled"}
    actions = [(r["who"], r["action"], r["detail"]) for r in store.audit_log()
               if r["action"].startswith("ota-")]
    assert actions[-1] == ("boss", "ota-offer", {"gates": ["in-1"], "version": 7,
                                                 "reboot": "03:30", "force": False})
    assert [a[1] for a in actions] == ["ota-cancel", "ota-cancel", "ota-reboot", "ota-offer",
                                       "ota-reboot", "ota-offer"]


def test_a_rolled_back_version_is_offered_again_only_with_force(lot):
    page, store, plan = lot
    boss = client_of(page, "boss")
    offer = {"target": "gate", "gate": "out-1", "version": "7", "reboot": "now"}
    status, _, html = boss.post("firmware/offer", offer)
    assert status == 400 and "gate out-1 rolled version 7 back" in html
    assert plan.plan("out-1")["state"] == "rolled back"
    status, _, html = boss.post("firmware/offer", dict(offer, target="all"))
    assert status == 400 and "gate out-1 rolled version 7 back: not offered to any gate" in html
    assert sorted(plan.plans()) == ["out-1"]              # in-1 and ex-1 not offered either
    assert boss.post("firmware/offer", dict(offer, force="1"))[0] == 200
    assert plan.plan("out-1")["state"] == "offered"


def test_an_attendant_may_neither_offer_nor_reboot_nor_cancel(lot):
    page, store, plan = lot
    att = client_of(page, "att")
    before = plan.plans()
    for path, fields in (("offer", {"target": "all", "version": "7", "reboot": "now"}),
                         ("reboot", {"target": "gate", "gate": "out-1", "when": "now"}),
                         ("cancel", {"target": "all"})):
        status, _, html = att.post("firmware/" + path, fields)
        assert status == 403 and "this needs the manager role" in html, path
    assert plan.plans() == before
    assert not [r for r in store.audit_log() if r["action"].startswith("ota-")]


def test_a_form_without_the_token_or_from_another_site_is_refused(lot):
    page, store, plan = lot
    boss = client_of(page, "boss")
    offer = {"target": "gate", "gate": "in-1", "version": "7", "reboot": "now"}
    assert boss.post("firmware/offer", offer, csrf=False)[0] == 403
    assert boss.post("firmware/offer", dict(offer, csrf="forged"), csrf=False)[0] == 403
    assert boss.post("firmware/offer", offer, headers={"Origin": "http://evil.example"})[0] == 403
    assert boss.post("firmware/cancel", {"target": "all"}, csrf=False)[0] == 403
    assert plan.plan("in-1") is None and plan.plan("out-1")["state"] == "rolled back"
    anonymous = WebClient(page.url, follow=False)
    assert anonymous.get("firmware")[0] == 303 and anonymous.get("api/firmware")[0] == 401
    assert anonymous.post("firmware/offer", offer)[0] == 303
    assert plan.plan("in-1") is None


@pytest.mark.parametrize("path, change, says", [
    ("offer", {"at": "25:00"}, "at: '25:00' is not a time of day HH:MM"),
    ("offer", {"at": "3:30"}, "at: '3:30' is not a time of day HH:MM"),
    ("offer", {"at": ""}, "at: '' is not a time of day HH:MM"),
    ("offer", {"version": "9"}, "image version 9 is not in the lot&#39;s image store"),
    ("offer", {"version": "v7"}, "version: &#39;v7&#39; is not an image version"),
    ("offer", {"version": "0"}, "version: &#39;0&#39; is not an image version"),
    ("offer", {"reboot": "later"}, "reboot: &#39;later&#39; is not one of now, at, manual"),
    ("offer", {"gate": "zz-9"}, "gate zz-9 is not a gate of lot L"),
    ("offer", {"gate": "no gate!"}, "is not a gate id"),
    ("offer", {"target": "some"}, "target: &#39;some&#39; is not gate or all"),
    ("offer", {"extra": "1"}, "unexpected field &#39;extra&#39;"),
    ("reboot", {"at": "12:60"}, "at: &#39;12:60&#39; is not a time of day HH:MM"),
    ("reboot", {"when": "manual", "at": ""}, "when: &#39;manual&#39; is not one of now, at"),
    ("reboot", {"gate": "ex-1", "at": "03:00"}, "gate ex-1 has no update under way"),
    ("reboot", {"target": "all", "at": "03:00"}, "no gate of lot L has an update under way"),
    ("cancel", {"gate": "out-1", "at": None}, "gate out-1 has no update under way")])
def test_a_bad_time_version_or_gate_is_refused_clearly_and_changes_nothing(lot, path, change, says):
    page, store, plan = lot
    boss = client_of(page, "boss")
    fields = {"offer": {"target": "gate", "gate": "in-1", "version": "7", "reboot": "at",
                        "at": "03:00"},
              "reboot": {"target": "gate", "gate": "out-1", "when": "at", "at": "03:00"},
              "cancel": {"target": "gate", "gate": "in-1"}}[path]
    fields = {k: v for k, v in dict(fields, **change).items() if v is not None}
    before = plan.plans()
    status, _, html = boss.post("firmware/" + path, fields)
    assert status == 400 and says.replace("'", "&#39;") in html, html
    assert plan.plans() == before
    assert not [r for r in store.audit_log() if r["action"].startswith("ota-")]


def test_a_lot_server_without_an_image_store_shows_so_and_changes_nothing(tmp_path):
    store = Store(str(tmp_path / "lot.sqlite"), "L")
    store.record_status("in-1", {"on": 1, "fw": 6, "ota": None, "rb": None})
    page = OperatorPage(store, "L", lambda: None, clock=lambda: T0, duty=1, aside=False).start()
    try:
        add_user(store, "boss", "manager")
        boss = client_of(page, "boss")
        status, _, html = boss.get("firmware")
        assert status == 200 and 'id="no-store"' in html and '<td class="fw">v6' in html
        assert 'action="/firmware/offer"' not in html
        status, _, html = boss.post("firmware/offer", {"target": "all", "version": "6",
                                                       "reboot": "now"})
        assert status == 400 and "keeps no firmware images" in html
    finally:
        page.stop()
        store.close()
