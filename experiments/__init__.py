"""Hydra entry points. Each is thin: compose config -> typed config -> library call -> write/log."""
