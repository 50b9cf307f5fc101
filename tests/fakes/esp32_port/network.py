"""A fake of MicroPython's network module on an ESP32 (see machine.py here):
WiFi joins at once, Ethernet has its address once active."""
STA_IF = 0
PHY_LAN8720 = 1
ETH_GOT_IP = 5


class WLAN:
    def __init__(self, interface):
        self._connected = False
        self._active = False

    def active(self, on=None):
        if on is not None:
            self._active = on
        return self._active

    def isconnected(self):
        return self._connected

    def connect(self, ssid, password):
        self._connected = True


class LAN:
    def __init__(self, **pins):
        self._active = False

    def active(self, on=None):
        if on is not None:
            self._active = on
        return self._active

    def ifconfig(self, config=None):
        return ("192.168.10.20", "255.255.255.0", "192.168.10.1", "192.168.10.1")

    def status(self):
        return ETH_GOT_IP if self._active else 0
