"""The simulator and the harnesses tests, demo and benches use: simulated gates running the
frozen 32-bit image, its REPL, a network proxy, a real mosquitto and PostgreSQL, a load
generator and the demo."""
