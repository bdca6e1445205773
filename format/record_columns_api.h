/* The C API of plinth.format._record_batch for other C extensions: the
 * RecordColumns object and the two functions that add a record to it. Exported
 * by format/_record_batch.c as a PyCapsule (the standard CPython pattern, as
 * numpy's _ARRAY_API), imported by client/_producer.c, whose fast path appends
 * records to the columns of an open batch without a Python call.
 *
 * An extension that uses it calls import_record_columns_api() once, in its
 * module init, and then RecordColumns_API->... . Callers hold the GIL; none of
 * these functions releases it or runs Python code.
 */
#ifndef PLINTH_RECORD_COLUMNS_API_H
#define PLINTH_RECORD_COLUMNS_API_H

#include <Python.h>
#include <stdint.h>

#include "record_batch_layout.h"

/* The records of one batch, column by column, in growable C buffers (no Python
 * object per record); RecordColumns.encode writes them as a RecordBatch. */
typedef struct {
    PyObject_HEAD
    Py_ssize_t count;               /* records */
    Py_ssize_t capacity;            /* records the three arrays hold */
    int32_t *key_lengths;           /* NULL_LENGTH: null key */
    int32_t *value_lengths;         /* NULL_LENGTH: null value */
    int64_t *timestamps_ms;
    unsigned char *keys;            /* the non-null keys, concatenated */
    Py_ssize_t keys_bytes, keys_capacity;
    unsigned char *values;          /* the non-null values, concatenated */
    Py_ssize_t values_bytes, values_capacity;
    int64_t timestamp_min_ms, timestamp_max_ms;   /* 0 while empty */
} RecordColumnsObject;

/* Bumped whenever the struct above or the table below changes. */
#define RECORD_COLUMNS_API_VERSION 1
#define RECORD_COLUMNS_API_MODULE "plinth.format._record_batch"
#define RECORD_COLUMNS_API_CAPSULE RECORD_COLUMNS_API_MODULE "._C_API"

typedef struct {
    int version;
    PyTypeObject *type;             /* RecordColumns */
    /* Make room for one more record; changes no record. 0, or -1 with an
     * exception set. Lengths are NULL_LENGTH for null. */
    int (*reserve)(RecordColumnsObject *columns, Py_ssize_t key_length,
                   Py_ssize_t value_length);
    /* Append one record after reserve succeeded; returns its index. Cannot fail. */
    Py_ssize_t (*commit)(RecordColumnsObject *columns, const void *key, Py_ssize_t key_length,
                         const void *value, Py_ssize_t value_length, int64_t timestamp_ms);
} RecordColumnsAPI;

/* Whether the columns' timestamps, with timestamp_ms, still span at most
 * TIMESTAMP_SPAN_MS_MAX (what one UInt32 delta holds). */
static inline int record_columns_span_fits(const RecordColumnsObject *columns,
                                           int64_t timestamp_ms) {
    if (columns->count == 0) {
        return 1;
    }
    int64_t low = timestamp_ms < columns->timestamp_min_ms ? timestamp_ms
                                                           : columns->timestamp_min_ms;
    int64_t high = timestamp_ms > columns->timestamp_max_ms ? timestamp_ms
                                                            : columns->timestamp_max_ms;
    return (uint64_t)high - (uint64_t)low <= TIMESTAMP_SPAN_MS_MAX;
}

#ifndef PLINTH_RECORD_BATCH_MODULE
/* In the importing extension: set by import_record_columns_api(). */
static const RecordColumnsAPI *RecordColumns_API;

/* As numpy's import_array: import the module, then take its capsule (PyCapsule_Import
 * would only import the top-level package and look the rest up as attributes). */
static int import_record_columns_api(void) {
    PyObject *module = PyImport_ImportModule(RECORD_COLUMNS_API_MODULE);
    if (module == NULL) {
        return -1;
    }
    PyObject *capsule = PyObject_GetAttrString(module, "_C_API");
    Py_DECREF(module);
    if (capsule == NULL) {
        return -1;
    }
    const RecordColumnsAPI *api = PyCapsule_GetPointer(capsule, RECORD_COLUMNS_API_CAPSULE);
    Py_DECREF(capsule);   /* the module keeps the capsule, and the table is static there */
    if (api == NULL) {
        return -1;
    }
    if (api->version != RECORD_COLUMNS_API_VERSION) {
        PyErr_Format(PyExc_ImportError,
                     "%s is version %d, this extension was built against version %d: "
                     "rebuild both (pip install -e .)",
                     RECORD_COLUMNS_API_CAPSULE, api->version, RECORD_COLUMNS_API_VERSION);
        return -1;
    }
    RecordColumns_API = api;
    return 0;
}
#endif

#endif
