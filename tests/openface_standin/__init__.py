"""OpenFace stand-in executables and test-media helpers (see README.md)."""
