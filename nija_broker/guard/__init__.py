"""The pre-trade guard: rules, reservations, the journal, applying the exchange's answers."""
