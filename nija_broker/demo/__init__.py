"""The demo: a scripted session against the built-in emulator."""
