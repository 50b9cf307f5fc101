"""The operator page without a browser: money formatting, its JSON
correction endpoint refusing bad input, and `parkgate bridge --http`
serving it behind its login. Its browser tests are in
test_operator_browser.py; the web application's own in test_web_app.py."""
import subprocess
import sys

import pytest

from fixtures_mqtt import TARIFF, wait_for
from parkgate_tools.sim.broker import free_port
from parkgate_tools.lot.operator_page import OperatorPage
from parkgate_tools.lot.store import Store
from parkgate_tools.lot.web.money_text import fen_from_yuan, yuan
from web_client import PASSWORD, WebClient, add_user, logged_in

T0 = 1795564800   # 2026-11-25 08:00 UTC+8


def test_money_is_exact():
    assert [yuan(f) for f in (0, 5, 100, 1999, -1800)] == [
        "0.00", "0.05", "1.00", "19.99", "-18.00"]
    assert [fen_from_yuan(t) for t in ("0", "0.1", "12.50", "3", "100000000")] == [
        0, 10, 1250, 300, 10 ** 10]
    for bad in ("1.001", "-1", "abc", "nan", "inf", "1e400", "100000000.01", "1" * 17):
        with pytest.raises(ValueError):
            fen_from_yuan(bad)


def test_correction_endpoint_refuses_bad_input(tmp_path):
    store = Store(str(tmp_path / "lot.sqlite"), "L")
    page = OperatorPage(store, "L", lambda: None, clock=lambda: T0).start()
    try:
        manager = logged_in(page, store)
        manager.get("")
        for body in ({"gate": "x", "jid": 1, "seq": 1, "action": "reviewed"},   # not stored
                     {"gate": "x", "jid": "a", "seq": 1, "action": "reviewed"}):
            assert manager.post_json("api/corrections", body)[0] == 400, body
        assert store.corrections() == []
    finally:
        page.stop()
        store.close()


def test_bridge_command_serves_the_page(tmp_path):
    from parkgate_tools.sim.broker import Broker
    port = free_port()
    db = str(tmp_path / "lot.sqlite")
    store = Store(db, "lot1")          # the page's user, made before the bridge starts
    add_user(store, "att", "attendant")
    store.close()
    with Broker(str(tmp_path / "broker")) as broker:
        proc = subprocess.Popen(
            [sys.executable, "-m", "parkgate_tools.cli", "bridge", "--lot", "lot1",
             "--broker", "%s:%d" % (broker.host, broker.port), "--db", db,
             "--tariff", TARIFF, "--http", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            client = WebClient("http://127.0.0.1:%d/" % port)

            def login_page():
                try:
                    return client.get("login")[0] == 200
                except OSError:
                    return False
            wait_for(login_page, 20, "the operator page of `parkgate bridge --http`")
            assert client.get("")[0] == 200 and "<h1>Log in" in client.get("")[2]
            assert client.login("att", PASSWORD) == 200
            html = client.get("")[2]
            assert "<h1>Lot lot1" in html
            assert '<div id="bridge-health">' in html and 'class="refused">0<' in html
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "operator page: http://127.0.0.1:%d/" % port in err
