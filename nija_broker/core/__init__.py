"""The pure core: value types, trackers, the diff, the rules' inputs, time. No I/O."""
