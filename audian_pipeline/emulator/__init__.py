"""The Audian API emulator: a deterministic account served over HTTP, with real audio files."""
