"""Builds the C extensions; everything else is in pyproject.toml.

All three are required: there is no pure-Python version of them.
plinth.format._record_batch is the RecordBatch in C (the producer's columns and
their encoding, the shard's check, the consumer's records) and Kafka's RecordBatch
v2 beside it;
plinth.client._producer is the producer's per-record path, which reaches the
columns through the format extension's PyCapsule; plinth.client._murmur2 is
Kafka's murmur2 for partition_for_key, from the same header as the producer's.
"""

from setuptools import Extension, setup

WARNINGS = ["-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
FORMAT_HEADERS = ["format/record_batch_layout.h", "format/record_columns_api.h",
                  "format/record_batch_internal.h"]

setup(ext_modules=[
    Extension("plinth.client._murmur2", ["client/_murmur2.c"], depends=["client/kafka_murmur2.h"],
              extra_compile_args=["-O2", *WARNINGS]),
    # -O3 and no early exit in the rule loops, so that gcc vectorizes them.
    # One extension owns the record format: Kafka's RecordBatch v2 (kafka_batch.c)
    # builds ConsumerRecords and reads stored batches through _record_batch.c.
    Extension("plinth.format._record_batch", ["format/_record_batch.c", "format/kafka_batch.c"],
              include_dirs=["format"], depends=FORMAT_HEADERS,
              extra_compile_args=["-O3", *WARNINGS]),
    Extension("plinth.client._producer", ["client/_producer.c"],
              include_dirs=["format"], depends=["client/kafka_murmur2.h", *FORMAT_HEADERS],
              extra_compile_args=["-O2", *WARNINGS]),
])
