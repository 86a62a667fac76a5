"""Helpers every layer uses: atomic file writes, one-line messages, the precision names. Imports
nothing else of the project."""
