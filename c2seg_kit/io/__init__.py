"""Readers for the C2Seg scene files and challenge tiles."""
