"""Task runners (one file per task) and the small helpers they share (common.py)."""
