"""Private namespaces: who may use them, and client-side protection of their records."""
