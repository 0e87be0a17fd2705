"""The nouns every part of homerun shares: states, specs, records, events and views, no I/O."""
