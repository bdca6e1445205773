"""Plinth's version: one place, which every part may import (plinth/__init__.py
imports the client, which the broker's parts may not)."""

VERSION = "0.1.0"
