"""The reconciler: keeps every account's books true to its exchange."""
