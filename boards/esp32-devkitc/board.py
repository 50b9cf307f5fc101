# Board: esp32-devkitc. ESP32-DevKitC (4 MiB flash, no PSRAM) with a 1-channel
# relay module, the ANPR camera on UART2 through a TTL/RS232 converter.
#
# Pin map (wiring: README.md, "A real board"):
#   UART2 RX GPIO16 <- camera TX, TX GPIO17 -> camera RX, 115200 8N1
#   GPIO26 -> relay module IN (this module is active low)
#   GPIO27 <- attendant's confirm button to GND (internal pull-up)
#   GPIO21 SDA, GPIO22 SCL (I2C0, 100 kHz) <- a DS3231 clock module, when
#     fitted (site.json "rtc": "ds3231"); the usual modules carry the
#     bus pull-ups; power the module from 3V3
#   GPIO33 <- the passage input to GND (internal pull-up), when fitted
#     (site.json "passage": true): a loop detector's output, active while a
#     car is on the loop behind the barrier, or a barrier contact active
#     while the barrier is up; each activation counts as one car when it ends
# Flash: the partition table boards/esp32-devkitc/partitions.csv keeps the
# stock MicroPython layout but gives the last 768 KiB to a raw data partition
# labelled "journal"; littlefs lives in "vfs".

# The ESP32 adapters (boards/esp32/esp32_board.py): they read the pins below.
from esp32_board import (ClockMemory, ClockSource, ConfirmButton, Display,  # noqa: F401
                         PassageSensor, Relay, Uart, Watchdog, free_flash, free_heap,
                         journal_device, kept_counting, load_site, log, mount_flash, mqtt,
                         ntp_server, ota_slots, reset, ticks_ms, udp_socket)
# The network: WiFi (site.json "wifi_ssid", "wifi_password").
from esp32_board import start_wifi as start_network, wifi_up as network_up  # noqa: F401

NAME = "esp32-devkitc"
UART_ID = 2
UART_RX = 16
UART_TX = 17
RELAY_PIN = 26
RELAY_ACTIVE_LEVEL = 0     # common opto-isolated relay modules switch on a low input
CONFIRM_PIN = 27           # attendant's confirm button to GND (internal pull-up)
RTC_SDA = 21               # the DS3231 on I2C0 (pins also in board.json "i2c")
RTC_SCL = 22
PASSAGE_PIN = 33           # passage input (pin also in board.json "passage")
PASSAGE_PULL_UP = True

# Set by the adapters: load_site() (site.json "passage"), ClockSource()
# (Q_RTC with a trusted DS3231; unset, as the RTC starts at 2000 after a
# power cut).
PASSAGE = False
BOOT_CLOCK_QUALITY = 0
