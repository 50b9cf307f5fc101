# Board: wt32-eth01. Wireless-Tag WT32-ETH01 (ESP32, 4 MiB flash, no PSRAM)
# with its on-board LAN8720 Ethernet PHY, a 1-channel relay module and the
# ANPR camera on UART2 through a TTL/RS232 converter. The adapters are the
# ESP32 boards' shared ones; only the network and the pins differ.
#
# Pin map (header labels in brackets; wiring in README.md, "A real board"):
#   UART2 RX IO5 [RXD] <- camera TX, TX IO17 [TXD] -> camera RX, 115200 8N1
#   IO4 -> relay module IN (this module is active low)
#   IO32 <- attendant's confirm button to GND (internal pull-up)
#   IO33 SDA, IO14 SCL (I2C0, 100 kHz) <- a DS3231 clock module,
#     when fitted (site.json "rtc": "ds3231"); the usual modules carry the
#     bus pull-ups; power the module from 3V3
#   IO35 <- the passage input, when fitted (site.json "passage": true): an
#     input-only pin without internal pull-up, so a 10 kOhm pull-up to 3V3
#     and the contact to GND; a loop detector's output, active while a car
#     is on the loop behind the barrier, or a barrier contact active while
#     the barrier is up; each activation counts as one car when it ends
#   Ethernet (fixed by the board): MDC IO23, MDIO IO18, PHY address 1, the
#   PHY's 50 MHz oscillator enabled by IO16 and clocking the EMAC on IO0.
#   Keep IO0, IO2, IO12 and IO15 free: they are boot strapping pins.
# Flash: boards/wt32-eth01/partitions.csv, the esp32-devkitc layout (the last
# 768 KiB a raw data partition "journal", littlefs in "vfs").
import machine
import network

# The ESP32 adapters (boards/esp32/esp32_board.py): they read the pins below.
from esp32_board import (ClockMemory, ClockSource, ConfirmButton, Display,  # noqa: F401
                         PassageSensor, Relay, Uart, Watchdog, free_flash, free_heap,
                         journal_device, kept_counting, load_site, log, mount_flash, mqtt,
                         ntp_server, ota_slots, reset, ticks_ms, udp_socket)

NAME = "wt32-eth01"
UART_ID = 2
UART_RX = 5
UART_TX = 17
RELAY_PIN = 4
RELAY_ACTIVE_LEVEL = 0     # common opto-isolated relay modules switch on a low input
ETH_MDC = 23
ETH_MDIO = 18
ETH_POWER = 16             # enables the PHY's clock oscillator
ETH_REF_CLK = 0            # the oscillator's 50 MHz clock comes in on IO0
ETH_PHY_ADDR = 1
CONFIRM_PIN = 32           # attendant's confirm button to GND (internal pull-up)
RTC_SDA = 33               # the DS3231 on I2C0 (pins also in board.json "i2c")
RTC_SCL = 14
PASSAGE_PIN = 35           # passage input (pin also in board.json "passage")
PASSAGE_PULL_UP = False    # input only, no internal pull-up: an external one

# Set by the adapters: load_site() (site.json "passage"), ClockSource()
# (Q_RTC with a trusted DS3231; unset, as the RTC starts at 2000 after a
# power cut).
PASSAGE = False
BOOT_CLOCK_QUALITY = 0

_lan = None


def start_network(site):
    """Start Ethernet; returns at once (DHCP, or the site's "ip": [address,
    netmask, gateway, dns]); the link waits for network_up()."""
    global _lan
    if _lan is None:
        # The esp32 port's LAN takes the pins as keywords; the stubs only
        # know the generic (id, phy_type, phy_addr, ref_clk_mode) signature.
        _lan = network.LAN(mdc=machine.Pin(ETH_MDC), mdio=machine.Pin(ETH_MDIO),  # type: ignore[call-arg]
                           power=machine.Pin(ETH_POWER), phy_type=network.PHY_LAN8720,
                           phy_addr=ETH_PHY_ADDR, ref_clk=machine.Pin(ETH_REF_CLK),
                           ref_clk_mode=machine.Pin.IN)
    _lan.active(True)
    ip = site.get("ip")
    if ip:
        _lan.ifconfig((ip[0], ip[1], ip[2], ip[3]))


def network_up():
    return _lan is not None and _lan.status() == network.ETH_GOT_IP
