# A deliberately broken gate image for the OTA tests (build_firmware.py
# --variant crash): frozen in place of firmware/main.py, it crashes at boot,
# before the gate could mark itself valid. Not a change to the firmware.
import board
import fw_version

board.log("CRASH at boot: image version=%d variant=%s" % (fw_version.VERSION, fw_version.VARIANT))
raise RuntimeError("broken image: crashes at boot")
