# parkgate firmware: the pure core (frame, plate, tariff, record, journal, lane)
# and the gate application that wires it to a board's adapters.
