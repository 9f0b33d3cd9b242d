"""A run folder and its files: their names and formats, checkpoints (safe loading, atomic saving, which
checkpoints a folder names), resume and the run lock. The bottom layer: it imports nothing of the
package but the foundations (errors, atomic writing)."""
