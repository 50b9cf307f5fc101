"""Host-side tools of parkgate: lot bridge, simulator, field tools."""
