# The gate's code, as every board's image freezes it: the firmware package,
# its entry point (on an ESP32 a frozen main.py runs at boot in preference to
# one on the filesystem) and umqtt.simple as pinned by
# host_tools/fetch_umqtt.py (make setup fetches it into build/lib).
# Included by boards/<board>/manifest.py; paths are relative to this file.
package("parkgate", base_path=".")
module("main.py", base_path=".")
package("umqtt", base_path="../build/lib")
