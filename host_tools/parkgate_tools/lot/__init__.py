"""The lot server: the MQTT bridge that stores every gate event once and answers fees,
the event store (SQLite or PostgreSQL), the operator page, the forwarder to the central
server, the broker credentials and ACL, and the signed downlinks to the gates."""
