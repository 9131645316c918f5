"""Deepening: inserted identity layers and residual branches."""
