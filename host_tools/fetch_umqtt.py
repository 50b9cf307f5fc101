"""Fetch micropython-lib's umqtt.simple into build/lib/umqtt/simple.py.

The PyPI distribution ``micropython-umqtt.simple`` is an old upip archive with
no setup.py, so pip refuses to install or download it. This script asks the
package index that pip is configured to use (PIP_INDEX_URL, pip's config, or
pip's own default) for the archive through its JSON simple API, checks the
pinned SHA-256 and unpacks the one file the firmware needs.
"""
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.parse
import urllib.request

DIST = "micropython-umqtt-simple"
VERSION = "1.3.4"
ARCHIVE = "micropython-umqtt.simple-1.3.4.tar.gz"
SHA256 = "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f"
MEMBER = "micropython-umqtt.simple-1.3.4/umqtt/simple.py"


def index_url():
    """The index pip would use: environment, then pip config, then pip's default."""
    url = os.environ.get("PIP_INDEX_URL")
    if url:
        return url
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(".index-url"):
            return value.strip().strip("'\"")
    from pip._internal.models.index import PyPI
    return PyPI.simple_url


def archive_url(index):
    req = urllib.request.Request(
        index.rstrip("/") + "/" + DIST + "/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        listing = json.load(resp)
    for entry in listing.get("files", []):
        if entry["filename"] == ARCHIVE:
            return urllib.parse.urljoin(resp.url, entry["url"])
    raise SystemExit("fetch_umqtt: %s not listed by %s" % (ARCHIVE, index))


def main(dest):
    target = os.path.join(dest, "umqtt", "simple.py")
    if os.path.exists(target):
        return
    url = archive_url(index_url())
    with urllib.request.urlopen(url, timeout=60) as resp:
        data = resp.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise SystemExit("fetch_umqtt: %s has sha256 %s, expected %s" % (ARCHIVE, digest, SHA256))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        source = tar.extractfile(MEMBER).read()
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target + ".part", "wb") as f:
        f.write(source)
    os.replace(target + ".part", target)
    print("fetch_umqtt: umqtt.simple %s -> %s" % (VERSION, target))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build/lib")
