# Copy host files onto the simulated gate's flash filesystem, as a field tool
# would over the REPL. usage: micropython provision.py NAME=HOSTPATH ...
import sys

import board

root = board.mount_flash()
for spec in sys.argv[1:]:
    name, path = spec.split("=", 1)
    with open(path, "rb") as src:
        data = src.read()
    with open(root + "/" + name, "wb") as dst:
        dst.write(data)
    print("provisioned %s (%d bytes)" % (name, len(data)))
