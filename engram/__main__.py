from engram.cli import app

app(prog_name="engram")
