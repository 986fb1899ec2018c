"""Sim: pure models of rayhet's serving system, timed by engine step models (no Ray, no clock, no I/O)."""
