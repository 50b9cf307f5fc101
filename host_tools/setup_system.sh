#!/usr/bin/env bash
# Install the Debian packages the simulator and tests run: mosquitto, socat,
# PostgreSQL (the tests start throwaway clusters of their own with initdb and
# pg_ctl, parkgate_tools/sim/pgserver.py) and Chromium with its WebDriver
# (parkgate_tools/sim/browser.py: the web application's browser tests and the
# demo's screenshots), and gcc-multilib to build the gate's 32-bit image.
# Only what is missing is installed.
set -euo pipefail
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v socat >/dev/null 2>&1 || missing+=(socat)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
# A font with the plates' Chinese characters, for the pages Chromium draws.
fc-list :lang=zh 2>/dev/null | grep -q . || missing+=(fonts-wqy-microhei)
# The simulator's 32-bit MicroPython image (make firmware BOARD=unix-sim).
dpkg -s gcc-multilib >/dev/null 2>&1 || missing+=(gcc-multilib)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "parkgate needs these Debian packages: ${missing[*]}" >&2
    echo "run as root:  apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
# The Debian package starts a broker on 1883; parkgate starts its own on free ports.
systemctl disable --now mosquitto >/dev/null 2>&1 || service mosquitto stop >/dev/null 2>&1 || true
# The Debian package creates and starts a cluster on 5432; parkgate's tests
# start their own on free ports. Stop it and keep it from starting at boot.
if [[ " ${missing[*]} " == *" postgresql "* ]]; then
    for conf in /etc/postgresql/*/*/start.conf; do
        if [ -f "$conf" ]; then echo manual > "$conf"; fi
    done
    if command -v pg_lsclusters >/dev/null 2>&1; then
        pg_lsclusters -h 2>/dev/null | while read -r version cluster _; do
            pg_ctlcluster "$version" "$cluster" stop >/dev/null 2>&1 || true
        done
    fi
    systemctl disable --now postgresql >/dev/null 2>&1 || service postgresql stop >/dev/null 2>&1 || true
fi
