"""Where experiments are kept: one backend interface, a SQL implementation."""
