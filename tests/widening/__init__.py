"""Widening: op rules, channel maps, heads, vocabulary, new outputs and the growth map."""
