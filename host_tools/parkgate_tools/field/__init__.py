"""Field tools: what an engineer at a lane runs over USB (mpremote) to deploy a board,
read its journal and state, set its clock and check a tariff (`parkgate board`, `parkgate tariff`)."""
