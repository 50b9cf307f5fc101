"""Field tools: what an engineer at a lane runs over USB (mpremote) to deploy a board,
read its journal and state, set its clock and check a tariff (`parkgate board`, `parkgate tariff`).

In the shape of mpremote: a command table, commands, a transport.

- board_cli.py: `parkgate board`, the table of its commands and how each prints;
- deploy.py: `deploy` (the configuration, and for development the code as .mpy);
- commands.py: status, journal, push-tariff, push-members, set-clock, test-relay, config;
- validate.py: site.json, tariff and member list checks on the host;
- output.py: the status as text, the journal as CSV or JSON;
- transport.py: the mpremote link to a board (Device) and the programs sent to it;
- onboard/: the MicroPython those programs are, run on the board (wrapper.py frames each);
- boards.py: boards/<name>/board.json; errors.py: the errors, worded for the field;
- tariff_cli.py: `parkgate tariff quote|check`.
"""
