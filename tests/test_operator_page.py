"""The operator page without a browser: money formatting, its JSON
correction endpoint refusing bad input, and `parkgate bridge --http`
serving it. Its browser tests are in test_operator_browser.py."""
import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from fixtures_mqtt import TARIFF, wait_for
from parkgate_tools.sim.broker import free_port
from parkgate_tools.lot.operator_page import OperatorPage, fen_from_yuan, yuan
from parkgate_tools.lot.store import Store

T0 = 1795564800   # 2026-11-25 08:00 UTC+8


def test_money_is_exact():
    assert [yuan(f) for f in (0, 5, 100, 1999, -1800)] == [
        "0.00", "0.05", "1.00", "19.99", "-18.00"]
    assert [fen_from_yuan(t) for t in ("0", "0.1", "12.50", "3")] == [0, 10, 1250, 300]
    for bad in ("1.001", "-1", "abc"):
        with pytest.raises(ValueError):
            fen_from_yuan(bad)


def test_correction_endpoint_refuses_bad_input(tmp_path):
    store = Store(str(tmp_path / "lot.sqlite"), "L")
    page = OperatorPage(store, "L", lambda: None, clock=lambda: T0).start()
    try:
        for body in ({"gate": "x", "jid": 1, "seq": 1, "action": "reviewed"},
                     {"gate": "x", "jid": "a", "seq": 1, "action": "reviewed"}):
            request = urllib.request.Request(page.url + "api/corrections", method="POST",
                                             data=json.dumps(body).encode())
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(request, timeout=10)
            assert caught.value.code == 400
        assert store.corrections() == []
    finally:
        page.stop()
        store.close()




def test_bridge_command_serves_the_page(tmp_path):
    from parkgate_tools.sim.broker import Broker
    port = free_port()
    with Broker(str(tmp_path / "broker")) as broker:
        proc = subprocess.Popen(
            [sys.executable, "-m", "parkgate_tools.cli", "bridge", "--lot", "lot1",
             "--broker", "%s:%d" % (broker.host, broker.port), "--db",
             str(tmp_path / "lot.sqlite"), "--tariff", TARIFF, "--http", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            def page():
                try:
                    with urllib.request.urlopen("http://127.0.0.1:%d/" % port,
                                                timeout=2) as response:
                        return response.read().decode()
                except OSError:
                    return None
            wait_for(page, 20, "the operator page of `parkgate bridge --http`")
            assert "<h1>Lot lot1" in page()
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "operator page: http://127.0.0.1:%d/" % port in err
