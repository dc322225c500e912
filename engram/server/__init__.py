"""The parts every Engram HTTP server shares (miner now, gateway later)."""
