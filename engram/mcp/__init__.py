"""``engram mcp``: the memory API as an MCP server, for agents (see server.py)."""
