/* What the two C sources of plinth.format._record_batch share: format/_record_batch.c
 * (the RecordBatch, and ConsumerRecord) and format/kafka_batch.c (Kafka's
 * RecordBatch v2). One extension owns the record format, so that both build
 * ConsumerRecords the same fast way and the Kafka conversion reads a stored
 * RecordBatch through the one canonical parser and the one copy of its rules.
 *
 * Internal to the extension: no other extension includes this (they use
 * format/record_columns_api.h). Callers hold the GIL.
 */
#ifndef PLINTH_RECORD_BATCH_INTERNAL_H
#define PLINTH_RECORD_BATCH_INTERNAL_H

#include <Python.h>
#include <stdint.h>

#include "record_batch_layout.h"

/* ---- The RecordBatch's fields, as a parser read them (format/_record_batch.c) ---- */

typedef struct {
    const unsigned char *at;
    uint64_t bytes;
} Blob;

/* A batch's fields and columns, from whichever parser read them. */
typedef struct {
    uint64_t record_count;          /* UInt32 in the schema */
    int64_t base_timestamp_ms;
    int64_t max_timestamp_ms;
    int64_t producer_id;
    int64_t base_sequence;          /* Int32 in the schema */
    Blob columns[DATA_POINTERS];
} BatchFields;

/* The canonical layout, bounds-checked, into *f; 1 if the batch has it, 0 if not. */
int parse_canonical(BatchFields *f, const unsigned char *message, Py_ssize_t message_bytes);

/* Every rule of the schema but the header indexes; 0, or -1 with ValueError. */
int check_rules(const BatchFields *f, uint64_t records_max);

/* ---- ConsumerRecord (format/_record_batch.c) -------------------------------------- */

/* Created untracked by the cyclic GC; whoever gives it a headers list (or any
 * container) must PyObject_GC_Track it (see the ConsumerRecord comment there). */
typedef struct {
    PyObject_HEAD
    PyObject *topic;
    PyObject *partition;
    PyObject *key;
    PyObject *value;
    PyObject *headers;      /* NULL until first read, then a list */
    long long offset;
    long long timestamp_ms;
} Record;

extern PyTypeObject RecordType;

/* A new ConsumerRecord with every field NULL or 0, untracked; NULL with an exception. */
Record *record_alloc(void);

/* ---- Kafka's RecordBatch v2 (format/kafka_batch.c) -------------------------------- */

/* Its module functions, added to the module by PyInit__record_batch. */
extern PyMethodDef kafka_batch_methods[];

#endif
