"""Account state: the SQLite store and each account's book."""
