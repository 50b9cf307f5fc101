"""`parkgate tariff quote|check`, on CPython and with --runtime micropython."""
import json
import os

from parkgate import tariff
from parkgate_host.tariffs import quote_dict
from parkgate_tools import cli, runtime

TABLES = os.path.join(runtime.FIRMWARE, "tariffs")
SZ = os.path.join(TABLES, "shenzhen_onstreet_class1.json")
T0 = 1772413200  # 2026-03-02T09:00 UTC+8


def _run(capsys, *argv):
    code = cli.main(["tariff"] + list(argv))
    return code, capsys.readouterr().out


def test_check_prints_version_and_digest(capsys):
    code, out = _run(capsys, "check", os.path.join(TABLES, "default.json"))
    with open(os.path.join(TABLES, "default.json")) as f:
        tf = tariff.load(json.load(f))
    assert code == 0 and out.strip() == "ok version 1 digest %s" % tf.digest


def test_check_names_the_bad_field(capsys, tmp_path):
    with open(SZ) as f:
        doc = json.load(f)
    doc["plans"]["working"]["bands"][0]["tiers"][1]["unit_minutes"] = 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    code, out = _run(capsys, "check", str(bad))
    assert code == 1
    assert out.startswith("error: plans.working.bands[0].tiers[1].unit_minutes: ")
    bad.write_text("{not json")
    assert _run(capsys, "check", str(bad))[0] == 1


def test_quote_prints_fee_and_breakdown(capsys):
    code, out = _run(capsys, "quote", SZ, "--entry", "2026-03-02T09:00", "--exit", "2026-03-02T10:10")
    assert code == 0
    assert out.splitlines()[-1] == "fee 15.00 yuan (1500 fen)"
    assert "working: all day [30-180 min] per 30 min" in out and "2 x 6.00" in out


def test_quote_json_is_the_quote_dict(capsys):
    code, out = _run(capsys, "quote", SZ, "--entry", str(T0), "--exit", "2026-03-02T12:01:30",
                     "--colour", "yellow", "--json")
    with open(SZ) as f:
        tf = tariff.load(json.load(f))
    assert code == 0
    assert json.loads(out) == quote_dict(tariff.quote(tf, T0, T0 + 3 * 3600 + 90, 1))


def test_micropython_runtime_gives_the_same_quote(capsys):
    for name in sorted(os.listdir(TABLES)):
        path = os.path.join(TABLES, name)
        args = ["quote", path, "--entry", "2026-03-06T18:40", "--exit", "2026-03-09T08:05",
                "--colour", "green", "--json"]
        code, on_cpython = _run(capsys, *args)
        assert code == 0
        code, on_micropython = _run(capsys, *(args + ["--runtime", "micropython"]))
        assert code == 0
        assert json.loads(on_micropython) == json.loads(on_cpython), name
    code, out = _run(capsys, "quote", SZ, "--entry", "2026-03-02T09:00", "--exit",
                     "2026-03-02T10:10", "--runtime", "micropython")
    assert code == 0 and out.splitlines()[-1] == "fee 15.00 yuan (1500 fen)"


def test_quote_member_and_no_entry(capsys):
    code, out = _run(capsys, "quote", SZ, "--entry", "2026-03-02T09:00", "--exit",
                     "2026-03-03T09:00", "--member")
    assert code == 0 and out.splitlines()[-1] == "fee 0.00 yuan (0 fen)"
    code, out = _run(capsys, "quote", SZ, "--exit", "2026-03-02T09:00", "--json")
    assert code == 0 and json.loads(out)["fee"] == 5000 and json.loads(out)["entry"] is None


def test_quote_errors_name_the_argument(capsys):
    code, out = _run(capsys, "quote", SZ, "--entry", "2026-03-02T10:00", "--exit", "2026-03-02T09:00")
    assert code == 1 and out.startswith("error: exit: ")
    code, out = _run(capsys, "quote", SZ, "--entry", "2026-02-30T10:00", "--exit", "2026-03-02T09:00")
    assert code == 1 and out.startswith("error: --entry: ")
    code, out = _run(capsys, "quote", SZ, "--exit", "2026-03-02T09:00", "--colour", "pink")
    assert code == 1 and out.startswith("error: --colour: ")
