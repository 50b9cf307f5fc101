"""Board definitions: boards/<name>/board.json, as the field tools and make lint read them."""
import json
import os

from parkgate_tools import runtime
from parkgate_tools.field.errors import FieldToolError


class BoardDef:
    """boards/<name>/board.json: how the field tools deploy to a board.

    fs_root: where the board's filesystem is (the REPL's cwd); umqtt_frozen:
    umqtt.simple is in the MicroPython image and deploy --code does not copy
    it; modules: the board's adapter modules, paths relative to the board
    folder ("board.py"; "../esp32/esp32_board.py", the module the ESP32
    boards share): frozen by its manifest.py, copied to the board's root
    under their base names by deploy --code, removed from it by a deploy
    without; reset: "machine" (machine.reset()) or "process" (the
    simulator: restart the process); site_required: site.json keys this
    board needs."""

    def __init__(self, name, doc):
        self.name = name
        self.doc = doc
        self.fs_root = doc.get("fs_root", "/")
        self.umqtt_frozen = bool(doc.get("umqtt_frozen", False))
        self.modules = list(doc.get("modules", ["board.py"]))
        self.reset = doc.get("reset", "machine")
        self.site_required = list(doc.get("site_required", []))
        self.folder = os.path.join(runtime.BOARDS, name)

    def module_sources(self):
        """[(source file, its name on the board)] of the board's modules: each
        path in "modules" taken relative to the board folder (it may lead out
        of it, not out of boards/), named on the board by its base name.
        FieldToolError for a missing file, a file outside boards/ or two
        modules of one name."""
        found = []
        names = set()
        for module in self.modules:
            source = os.path.normpath(os.path.join(self.folder, module))
            name = os.path.basename(source)
            if os.path.commonpath([source, runtime.BOARDS]) != runtime.BOARDS:
                raise FieldToolError("board %s: board.json lists module %s, outside boards/ "
                                     "(a board's modules live under boards/)" % (self.name, module))
            if not name.endswith(".py") or not os.path.isfile(source):
                raise FieldToolError("board %s: board.json lists module %s, not a .py file "
                                     "(looked for %s)" % (self.name, module, source))
            if name in names:
                raise FieldToolError("board %s: board.json lists two modules named %s: both "
                                     "would be %s on the board" % (self.name, name, name))
            names.add(name)
            found.append((source, name))
        return found


def board_names():
    """Names of the boards that have a board.json."""
    return sorted(name for name in os.listdir(runtime.BOARDS)
                  if os.path.isfile(os.path.join(runtime.BOARDS, name, "board.json")))


def load_board(name):
    """The BoardDef of boards/<name>; FieldToolError if there is none."""
    path = os.path.join(runtime.BOARDS, name, "board.json")
    try:
        with open(path, encoding="utf-8") as f:
            return BoardDef(name, json.load(f))
    except FileNotFoundError:
        raise FieldToolError("no board %r: boards with a board.json are %s"
                             % (name, ", ".join(board_names()))) from None
