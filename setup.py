"""Builds the C extensions; everything else is in pyproject.toml.

plinth._producer (the producer's per-record path) and
plinth.client._consumer_records (ConsumerRecord, built per fetched record) and
plinth.client._batch_check (the shard's fast check of each produced batch) are
required: there is no pure-Python version of either. plinth._murmur2 stays
optional: the partitioner falls back to its Python murmur2.
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("plinth._murmur2", ["plinth/_murmur2.c"], depends=["plinth/kafka_murmur2.h"],
              optional=True),
    Extension("plinth._producer", ["plinth/_producer.c"], depends=["plinth/kafka_murmur2.h"],
              extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                  "-Wno-missing-field-initializers"]),
    Extension("plinth.client._consumer_records", ["client/_consumer_records.c"]),
    Extension("plinth.client._batch_check", ["client/_batch_check.c"],
              extra_compile_args=["-O3", "-Wall", "-Wextra", "-Wno-unused-parameter"]),
])
