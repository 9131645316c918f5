"""Robustness: fuzzing, hostile files, atomic output, dtypes, control flow, absurd widths."""
