"""Builds the one C extension (plinth._murmur2); everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("plinth._murmur2", ["plinth/_murmur2.c"], optional=True),
                   Extension("plinth.client._consumer_records", ["client/_consumer_records.c"])])
