"""The agent-memory layer: memories over ordinary records (docs/memory.md).

:mod:`~engram.memory.model` says what a memory is, :mod:`~engram.memory.service`
what can be done with one, on any node; :mod:`~engram.memory.decay` and
:mod:`~engram.memory.tokens` are its two helpers (FSRS strength, token counts).
"""
