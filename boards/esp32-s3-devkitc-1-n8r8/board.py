# Board: esp32-s3-devkitc-1-n8r8. Espressif ESP32-S3-DevKitC-1 with the
# ESP32-S3-WROOM-1-N8R8 module (8 MiB quad flash, 8 MiB octal PSRAM), WiFi,
# a 1-channel relay module, the ANPR camera on UART1 through a TTL/RS232
# converter. The board for deploying the code as .mpy files
# (`parkgate board deploy --code`): the PSRAM gives the Python heap room for
# code loaded from the filesystem. The adapters are the ESP32 boards'
# shared ones; the pins and the chip differ.
#
# Pin map (wiring as on esp32-devkitc, README.md "A real board"):
#   UART1 RX GPIO18 <- camera TX, TX GPIO17 -> camera RX, 115200 8N1
#     (ESP-IDF's default UART1 pins, side by side on header J1)
#   GPIO4 -> relay module IN (this module is active low)
#   GPIO5 <- attendant's confirm button to GND (internal pull-up)
#   GPIO8 SDA, GPIO9 SCL (I2C0, 100 kHz) <- a DS3231 clock module, when
#     fitted (site.json "rtc": "ds3231"); the usual modules carry the bus
#     pull-ups; power the module from 3V3
#   GPIO7 <- the passage input to GND (internal pull-up), when fitted
#     (site.json "passage": true): a loop detector's output, active while a
#     car is on the loop behind the barrier, or a barrier contact active
#     while the barrier is up; each activation counts as one car when it ends
#   free for a display or more I/O: GPIO6, GPIO15, GPIO16
# Not to use: GPIO35-37 (the module's octal PSRAM), GPIO26-32 (its flash,
# not on the header), GPIO0, GPIO3, GPIO45, GPIO46 (boot strapping),
# GPIO19/20 (the USB port), GPIO43/44 (UART0: the REPL on the "UART" USB
# port), GPIO38 or GPIO48 (the RGB LED, by board revision).
# Flash: boards/esp32-s3-devkitc-1-n8r8/partitions.csv, MicroPython's app
# partition, 4 MiB of littlefs in "vfs" and the last 2 MiB a raw data
# partition "journal".

# The ESP32 adapters (boards/esp32/esp32_board.py): they read the pins below.
from esp32_board import (ClockMemory, ClockSource, ConfirmButton, Display,  # noqa: F401
                         PassageSensor, Relay, Uart, Watchdog, free_flash, free_heap,
                         journal_device, kept_counting, load_site, log, mount_flash, mqtt,
                         ntp_server, ota_slots, reset, ticks_ms, udp_socket)
# The network: WiFi (site.json "wifi_ssid", "wifi_password").
from esp32_board import start_wifi as start_network, wifi_up as network_up  # noqa: F401

NAME = "esp32-s3-devkitc-1-n8r8"
UART_ID = 1
UART_RX = 18
UART_TX = 17
RELAY_PIN = 4
RELAY_ACTIVE_LEVEL = 0     # common opto-isolated relay modules switch on a low input
CONFIRM_PIN = 5            # attendant's confirm button to GND (internal pull-up)
RTC_SDA = 8                # the DS3231 on I2C0 (pins also in board.json "i2c")
RTC_SCL = 9
PASSAGE_PIN = 7            # passage input (pin also in board.json "passage")
PASSAGE_PULL_UP = True

# Set by the adapters: load_site() (site.json "passage"), ClockSource()
# (Q_RTC with a trusted DS3231; unset, as the RTC starts at 2000 after a
# power cut).
PASSAGE = False
BOOT_CLOCK_QUALITY = 0
