"""Cells from class labels, and their measurements."""
