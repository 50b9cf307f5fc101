# Copy host files onto the simulated gate's flash filesystem, as a field tool
# would over the REPL (folders in NAME are made). usage, on the image:
#   micropython -m provision NAME=HOSTPATH ...
import os
import sys

import board

root = board.mount_flash()
for spec in sys.argv[1:]:
    name, path = spec.split("=", 1)
    folder = root
    for part in name.split("/")[:-1]:
        folder += "/" + part
        try:
            os.mkdir(folder)
        except OSError:
            pass     # there already
    with open(path, "rb") as src:
        data = src.read()
    with open(root + "/" + name, "wb") as dst:
        dst.write(data)
    print("provisioned %s (%d bytes)" % (name, len(data)))
