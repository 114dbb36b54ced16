"""Argument parsing for the console scripts (thin: parse, call, print)."""
