"""The prediction log: every answer kept in a database (SQLite by default, PostgreSQL at scale),
the feedback that corrects it, the live quality computed from both, and the training export."""
