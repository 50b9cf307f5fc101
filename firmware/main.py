# Entry point on every board: the board module comes from boards/<name>/.
import board
from parkgate import app

app.run(board)
