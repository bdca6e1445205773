"""Builds the C extensions; everything else is in pyproject.toml.

plinth.client._producer (the producer's per-record path),
plinth.format._consumer_records (ConsumerRecord, built per fetched record) and
plinth.format._batch_check (the shard's fast check of each produced batch) are
required: there is no pure-Python version of them. plinth.client._murmur2
stays optional: the partitioner falls back to its Python murmur2.
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("plinth.client._murmur2", ["client/_murmur2.c"], depends=["client/kafka_murmur2.h"],
              optional=True),
    Extension("plinth.client._producer", ["client/_producer.c"],
              depends=["client/kafka_murmur2.h"],
              extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                  "-Wno-missing-field-initializers"]),
    Extension("plinth.format._consumer_records", ["format/_consumer_records.c"]),
    Extension("plinth.format._batch_check", ["format/_batch_check.c"],
              extra_compile_args=["-O3", "-Wall", "-Wextra", "-Wno-unused-parameter"]),
])
