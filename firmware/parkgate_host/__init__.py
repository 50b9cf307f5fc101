"""parkgate_host: the host side of the shared rules - the encoders and builders
only the host runs (camera frames, GBK text, member lists and deltas, signed
envelopes, quotes as dicts). The same MicroPython subset as the firmware
package `parkgate` it builds on, tested on both interpreters; never frozen
into a gate's image."""
