# MicroPython, run on the board inside wrapper.py (field/transport.py).
# Before a deploy: remove code folders and files, make folders, drop files
# a deploy no longer brings.
# args: {"purge": [folder or file], "remove": [file], "dirs": [folder],
# "clean": {folder: [names to keep]}}. Prints {"removed": [path]}.
import os
removed = []

def rmtree(path):
    for entry in os.ilistdir(path):
        inner = join(path, entry[0])
        if entry[1] == 0x4000:
            rmtree(inner)
        else:
            os.remove(inner)
            removed.append(inner)
    os.rmdir(path)
    removed.append(path + "/")

stage[0] = "old code"
for d in args["purge"]:
    try:
        is_dir = os.stat(d)[0] & 0x4000
    except OSError:
        continue
    if is_dir:
        rmtree(d)
    else:
        os.remove(d)
        removed.append(d)
for path in args["remove"]:
    try:
        os.remove(path)
        removed.append(path)
    except OSError:
        pass
stage[0] = "folders"
for d in args["dirs"]:
    try:
        os.mkdir(d)
    except OSError:
        if not os.stat(d)[0] & 0x4000:
            raise OSError("%s exists and is not a folder" % d)
stage[0] = "old files"
for d in args["clean"]:
    keep = args["clean"][d]
    for name in os.listdir(d):
        path = join(d, name)
        if name not in keep and not os.stat(path)[0] & 0x4000:
            os.remove(path)
            removed.append(path)
out({"removed": removed})
