"""lth: an experiment runner for the Lottery Ticket Hypothesis."""

__version__ = "0.1.0"
