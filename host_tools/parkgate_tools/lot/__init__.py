"""The lot server: the MQTT bridge that stores every gate event once and answers fees,
the event store (SQLite or PostgreSQL), the operator page, the forwarder to the central
server, the broker credentials and ACL, and the signed downlinks to the gates.

A gate's batch, in the order it goes: bridge.py (the MQTT session, routing each
message) -> gate_messages.py (checked) -> group_commit.py (stored with all that
waits, in one transaction, then acknowledged) -> store/ (schema.py: the tables
and SQL; sqlite.py or postgres.py). A fee query: answers.py, with the tariff
tariff_in_use.py picks. Then forwarder.py (to the central server),
operator_page.py (the operator page's model; page_numbers.py its numbers,
page_worker.py its own process) served by web/app.py (Starlette, Jinja2,
uvicorn, with login: web/auth.py) and pushing through gate_pusher.py,
security.py (broker users and ACL), downlink.py (signed tariffs and member
lists), cli.py (`parkgate bridge`)."""
