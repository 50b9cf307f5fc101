# A deliberately broken gate image for the OTA tests (build_firmware.py
# --variant nolink): frozen in place of firmware/main.py, it boots, arms the
# watchdog and never brings its link up, so never proves itself; it stops
# feeding the watchdog (as the probation guard does when the link stays
# down) and the board's watchdog resets it. Not a change to the firmware.
import time

import board
import fw_version

board.log("NOLINK boot: image version=%d variant=%s, link never up" % (
    fw_version.VERSION, fw_version.VARIANT))
board.Watchdog()
while True:
    time.sleep_ms(100)
