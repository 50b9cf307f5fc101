"""parkgate's host side, one package per role.

lot/      the lot server: MQTT bridge, event store, operator page, forwarder
central/  the central (head-office) server the lots forward to
field/    what a field engineer carries: board deploy, status, journal, tariff check
sim/      the simulator and test harnesses: simulated gates, broker, PostgreSQL, demo
bench/    `make bench`

Top level: cli.py (the `parkgate` command), runtime.py (where the tree and the
MicroPython interpreters are), files.py (atomic writes), lint.py (`make lint`)."""
