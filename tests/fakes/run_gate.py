# The gate (parkgate.app.Gate, frozen in the simulator's image) on the fake
# board (tests/fakes/board.py, the `board` this script imports: its folder
# comes first on sys.path), fed one car's camera frame, on MicroPython.
# usage: micropython tests/fakes/run_gate.py FS_DIR FRAME_HEX
# Prints one JSON line: the relay's changes, the EVENT lines, the topics published.
import binascii
import json
import sys

from board import FakeBoard, gate_a_car

site = {"lot": "t", "gate": "g1", "direction": "in", "broker": "127.0.0.1"}
board = FakeBoard(site, sys.argv[1], seconds=800000000)
gate_a_car(board, binascii.unhexlify(sys.argv[2]))
print(json.dumps({"relay": board.relay.changes, "events": board.logged("EVENT"),
                  "topics": board.broker.topics(), "feeds": board.watchdog.feeds}))
