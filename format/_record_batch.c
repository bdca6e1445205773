/* plinth.format._record_batch: the RecordBatch in C, for its three users.
 *
 *   producer  RecordColumns: the records of one batch in growable column buffers,
 *             and encode(), which writes them as a RecordBatch (no headers). Its C
 *             functions are exported as a PyCapsule (format/record_columns_api.h)
 *             for client/_producer.c's fast path.
 *   shard     summarize(): the canonical parser, then the rules of the schema, in
 *             one pass over the message. check(): the same rules on the fields
 *             and columns pycapnp read from any other layout.
 *   consumer  ConsumerRecord, and decode_canonical() / build_records(): one record
 *             per entry of a batch the shard accepted, with a defensive bounds
 *             check only.
 *
 * Kafka's RecordBatch v2 is compiled into this same extension from
 * format/kafka_batch.c, which builds ConsumerRecords with record_alloc and reads a
 * stored batch with parse_canonical and check_rules (shared through
 * format/record_batch_internal.h); its functions are added to this module at init.
 *
 * The byte layout, its constants and the little-endian helpers are in
 * format/record_batch_layout.h, each defined once. format/record_batch.py is the
 * module's Python face and holds the reference codec (pycapnp), which parses any
 * layout; this file's parser takes only the canonical one and declines (None)
 * the rest, so the two read the same fields or the C one steps aside
 * (tests/format/test_record_batch_check.py checks that).
 *
 * The rules (check_rules) exist once, here, and write every error message, with
 * the numbers: ValueError, which record_batch.py turns into InvalidBatchError.
 * Only the header-index rules (sorted, < recordCount) are Python's, because only
 * the pycapnp path has headers.
 *
 * Why C: a produced batch is checked in 0.25 us instead of 25 us with pycapnp, a
 * record is appended in 0.15 us instead of 2 us, and a consumer record costs one
 * small object and two bytes slices.
 *
 * Threads: any thread holding the GIL may call into this module; nothing here
 * releases the GIL or runs Python code between reading and changing state.
 * A RecordColumns is not thread-safe on its own: its owner (a BatchBuilder, the
 * producer's accumulator) lets one thread at a time use it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PLINTH_RECORD_BATCH_MODULE
#include "record_columns_api.h"
#include "record_batch_internal.h"

#define COLUMNS_RECORDS_INITIAL 64
#define COLUMNS_BLOB_BYTES_INITIAL 4096
#define SUMMARY_FIELDS 6

/* ==== The rules of the schema ======================================================== */

/* Blob and BatchFields: format/record_batch_internal.h. */

static const char *const COLUMN_NAMES[DATA_POINTERS] = {
    "timestampDeltasMs", "keyLengths", "keys", "valueLengths", "values",
};

/* The rules on the fields that are not columns, shared with encode(): a batch has
 * 1 to records_max records, timestamps of 0 or more in order spanning at most a
 * UInt32 of ms, and producerId and baseSequence both -1 or both set. 0, or -1 with
 * ValueError. baseTimestampMs is the smallest record timestamp (check_deltas holds
 * it to min(delta) == 0), so it alone decides whether every record's is >= 0: a
 * negative time has no meaning for retention or a time lookup. */
static int check_scalars(uint64_t record_count, int64_t base_ms, int64_t max_ms,
                         int64_t producer_id, int64_t base_sequence, uint64_t records_max) {
    if (record_count < 1 || record_count > records_max) {
        PyErr_Format(PyExc_ValueError, "record batch has recordCount %llu, must be 1 to %llu",
                     (unsigned long long)record_count, (unsigned long long)records_max);
        return -1;
    }
    if (base_ms < 0) {
        PyErr_Format(PyExc_ValueError,
                     "record batch baseTimestampMs %lld is negative: every record's timestamp "
                     "must be >= 0 ms since the epoch", (long long)base_ms);
        return -1;
    }
    if (max_ms < base_ms) {
        PyErr_Format(PyExc_ValueError,
                     "record batch maxTimestampMs %lld is below baseTimestampMs %lld",
                     (long long)max_ms, (long long)base_ms);
        return -1;
    }
    uint64_t span_ms = (uint64_t)max_ms - (uint64_t)base_ms;
    if (span_ms > TIMESTAMP_SPAN_MS_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "record batch timestamps span %llu ms (baseTimestampMs %lld to "
                     "maxTimestampMs %lld), over the %llu ms one batch holds",
                     (unsigned long long)span_ms, (long long)base_ms, (long long)max_ms,
                     (unsigned long long)TIMESTAMP_SPAN_MS_MAX);
        return -1;
    }
    if (producer_id < -1 || base_sequence < -1 || (producer_id >= 0 && base_sequence < 0)) {
        PyErr_Format(PyExc_ValueError,
                     "record batch producerId %lld with baseSequence %lld: both must be >= -1, "
                     "and baseSequence >= 0 when producerId is set",
                     (long long)producer_id, (long long)base_sequence);
        return -1;
    }
    return 0;
}

static int check_column_sizes(const BatchFields *f) {
    static const int sized[] = {DELTAS, KEY_LENGTHS, VALUE_LENGTHS};
    uint64_t column_bytes = (uint64_t)COLUMN_ENTRY_BYTES * f->record_count;
    for (size_t i = 0; i < sizeof sized / sizeof sized[0]; i++) {
        if (f->columns[sized[i]].bytes != column_bytes) {
            PyErr_Format(PyExc_ValueError,
                         "record batch column %s is %llu bytes, must be %llu for %llu records",
                         COLUMN_NAMES[sized[i]], (unsigned long long)f->columns[sized[i]].bytes,
                         (unsigned long long)column_bytes,
                         (unsigned long long)f->record_count);
            return -1;
        }
    }
    return 0;
}

/* No length below -1, and the non-null lengths add up to the blob's size. One pass
 * without an early exit and with a size_t index (a uint32_t one may wrap, which
 * stops gcc -O3 vectorizing): the three columns of 8,000 records take about 7 us
 * instead of 14. */
static int lengths_ok(const unsigned char *lengths, uint64_t record_count, uint64_t blob_bytes) {
    int32_t length_min = 0;
    uint64_t sum_bytes = 0;         /* at most 2^32 records x 2^31 bytes: no overflow */
    for (size_t i = 0; i < record_count; i++) {
        int32_t length = read_i32_le(lengths + COLUMN_ENTRY_BYTES * i);
        length_min = length < length_min ? length : length_min;
        sum_bytes += length > 0 ? (uint64_t)length : 0;
    }
    return length_min >= NULL_LENGTH && sum_bytes == blob_bytes;
}

/* The message for lengths that lengths_ok refused; the first broken rule. */
static int lengths_error(const char *what, const unsigned char *lengths, uint64_t record_count,
                         uint64_t blob_bytes) {
    uint64_t sum_bytes = 0;
    for (uint64_t i = 0; i < record_count; i++) {
        int32_t length = read_i32_le(lengths + COLUMN_ENTRY_BYTES * i);
        if (length < NULL_LENGTH) {
            PyErr_Format(PyExc_ValueError,
                         "record batch %s length of record %llu is %d, must be >= -1", what,
                         (unsigned long long)i, (int)length);
            return -1;
        }
        sum_bytes += length > 0 ? (uint64_t)length : 0;
    }
    PyErr_Format(PyExc_ValueError, "record batch %s lengths sum to %llu bytes but the %ss are "
                 "%llu bytes", what, (unsigned long long)sum_bytes, what,
                 (unsigned long long)blob_bytes);
    return -1;
}

static int check_lengths(const char *what, const Blob *lengths, uint64_t record_count,
                         const Blob *blob) {
    if (lengths_ok(lengths->at, record_count, blob->bytes)) {
        return 0;
    }
    return lengths_error(what, lengths->at, record_count, blob->bytes);
}

/* min(delta) == 0 and max(delta) == maxTimestampMs - baseTimestampMs (check_scalars
 * has checked that this span fits a UInt32); vectorized like lengths_ok. */
static int check_deltas(const BatchFields *f) {
    uint64_t span_ms = (uint64_t)f->max_timestamp_ms - (uint64_t)f->base_timestamp_ms;
    const unsigned char *deltas = f->columns[DELTAS].at;
    uint32_t delta_min_ms = UINT32_MAX, delta_max_ms = 0;
    for (size_t i = 0; i < f->record_count; i++) {
        uint32_t delta_ms = read_u32_le(deltas + COLUMN_ENTRY_BYTES * i);
        delta_min_ms = delta_ms < delta_min_ms ? delta_ms : delta_min_ms;
        delta_max_ms = delta_ms > delta_max_ms ? delta_ms : delta_max_ms;
    }
    if (delta_min_ms == 0 && delta_max_ms == span_ms) {
        return 0;
    }
    PyErr_Format(PyExc_ValueError,
                 "record batch timestamp deltas run %u to %u ms, must run 0 to %llu "
                 "(maxTimestampMs %lld - baseTimestampMs %lld)", (unsigned)delta_min_ms,
                 (unsigned)delta_max_ms, (unsigned long long)span_ms,
                 (long long)f->max_timestamp_ms, (long long)f->base_timestamp_ms);
    return -1;
}

/* Every rule of the schema but the header indexes. 0, or -1 with ValueError naming
 * the first broken rule and its numbers. The columns must lie inside memory the
 * caller holds; their sizes are checked before any is read. */
int check_rules(const BatchFields *f, uint64_t records_max) {
    if (check_scalars(f->record_count, f->base_timestamp_ms, f->max_timestamp_ms,
                      f->producer_id, f->base_sequence, records_max) < 0 ||
        check_column_sizes(f) < 0) {
        return -1;
    }
    if (check_lengths("key", &f->columns[KEY_LENGTHS], f->record_count, &f->columns[KEYS]) < 0 ||
        check_lengths("value", &f->columns[VALUE_LENGTHS], f->record_count,
                      &f->columns[VALUES]) < 0) {
        return -1;
    }
    return check_deltas(f);
}

/* ==== The canonical parser =========================================================== */

/* Where the parse is in the message. */
typedef struct {
    const unsigned char *segment;
    uint64_t segment_words;
    uint64_t next_blob_word;        /* where the next blob must start */
} Cursor;

/* Segment table and root pointer; 1 if canonical. */
static int parse_head(Cursor *cursor, const unsigned char *message, Py_ssize_t message_bytes) {
    if (message_bytes < WORD_BYTES * (1 + BLOBS_AT_WORD) || message_bytes % WORD_BYTES != 0) {
        return 0;
    }
    cursor->segment = message + SEGMENT_TABLE_BYTES;
    cursor->segment_words = (uint64_t)message_bytes / WORD_BYTES - 1;
    cursor->next_blob_word = BLOBS_AT_WORD;
    if (read_u32_le(message) != 0 || read_u32_le(message + 4) != cursor->segment_words) {
        return 0;
    }
    return read_u32_le(cursor->segment) == 0 &&
           read_u32_le(cursor->segment + 4) == ROOT_POINTER_UPPER;
}

static void parse_data_section(const Cursor *cursor, BatchFields *f) {
    const unsigned char *data = cursor->segment + WORD_BYTES * DATA_AT_WORD;
    f->record_count = read_u32_le(data + RECORD_COUNT_AT);
    f->base_sequence = (int32_t)(read_u32_le(data + BASE_SEQUENCE_AT) ^ UINT32_MAX);
    f->base_timestamp_ms = (int64_t)read_u64_le(data + BASE_TIMESTAMP_AT);
    f->max_timestamp_ms = (int64_t)read_u64_le(data + MAX_TIMESTAMP_AT);
    f->producer_id = (int64_t)(read_u64_le(data + PRODUCER_ID_AT) ^ UINT64_MAX);
}

/* The Data pointer at segment word `pointer_word`; 1 if canonical and in bounds. */
static int parse_blob(Cursor *cursor, uint64_t pointer_word, Blob *blob) {
    const unsigned char *pointer = cursor->segment + WORD_BYTES * pointer_word;
    uint32_t lower = read_u32_le(pointer), upper = read_u32_le(pointer + 4);
    if (lower == 0 && upper == 0) {             /* null: capnp reads an empty Data */
        blob->at = pointer;
        blob->bytes = 0;
        return 1;
    }
    uint32_t offset_words = lower >> 2;
    if ((lower & 3u) != LIST_POINTER_KIND || (upper & 7u) != BYTE_ELEMENT_SIZE ||
        (offset_words & OFFSET_SIGN_BIT) != 0 ||
        pointer_word + 1 + offset_words != cursor->next_blob_word) {
        return 0;
    }
    uint64_t bytes = upper >> 3;
    uint64_t words = (bytes + WORD_BYTES - 1) / WORD_BYTES;
    if (words > cursor->segment_words - cursor->next_blob_word) {  /* next <= segment_words */
        return 0;
    }
    blob->at = cursor->segment + WORD_BYTES * cursor->next_blob_word;
    blob->bytes = bytes;
    cursor->next_blob_word += words;
    return 1;
}

/* The whole canonical layout, bounds-checked, into *f; 1 if the batch has it. Blobs
 * laid end to end cannot overlap, so the words read equal the message's words:
 * pycapnp would read the same fields from the same bytes. Checks no rule. */
int parse_canonical(BatchFields *f, const unsigned char *message,
                    Py_ssize_t message_bytes) {
    Cursor cursor;
    if (!parse_head(&cursor, message, message_bytes)) {
        return 0;
    }
    parse_data_section(&cursor, f);
    for (int i = 0; i < DATA_POINTERS; i++) {
        if (!parse_blob(&cursor, POINTERS_AT_WORD + i, &f->columns[i])) {
            return 0;
        }
    }
    return read_u64_le(cursor.segment + WORD_BYTES * HEADERS_POINTER_WORD) == 0 &&
           cursor.next_blob_word == cursor.segment_words;
}

/* ==== RecordColumns: the producer's columns, and their encoding ======================== */

typedef RecordColumnsObject Columns;

static PyTypeObject ColumnsType;

static int grow_blob(unsigned char **blob, Py_ssize_t *capacity, Py_ssize_t needed) {
    if (needed <= *capacity) {
        return 0;
    }
    if (needed > (Py_ssize_t)BLOB_BYTES_MAX) {
        PyErr_Format(PyExc_OverflowError, "record batch blob of %zd bytes is over %zd",
                     needed, (Py_ssize_t)BLOB_BYTES_MAX);
        return -1;
    }
    Py_ssize_t grown = *capacity ? *capacity : COLUMNS_BLOB_BYTES_INITIAL;
    while (grown < needed) {
        grown *= 2;
    }
    unsigned char *bigger = PyMem_RawRealloc(*blob, (size_t)grown);
    if (bigger == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *blob = bigger;
    *capacity = grown;
    return 0;
}

static int grow_records(Columns *c) {
    if (c->count < c->capacity) {
        return 0;
    }
    Py_ssize_t grown = c->capacity ? c->capacity * 2 : COLUMNS_RECORDS_INITIAL;
    /* Each realloc that succeeds keeps its (bigger) buffer; capacity moves only
     * when all three have grown, so a failure leaves the columns consistent. */
    int32_t *k = PyMem_RawRealloc(c->key_lengths, (size_t)grown * sizeof(int32_t));
    if (k != NULL) {
        c->key_lengths = k;
    }
    int32_t *v = PyMem_RawRealloc(c->value_lengths, (size_t)grown * sizeof(int32_t));
    if (v != NULL) {
        c->value_lengths = v;
    }
    int64_t *t = PyMem_RawRealloc(c->timestamps_ms, (size_t)grown * sizeof(int64_t));
    if (t != NULL) {
        c->timestamps_ms = t;
    }
    if (k == NULL || v == NULL || t == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    c->capacity = grown;
    return 0;
}

/* RecordColumnsAPI.reserve: room for one more record; changes no record. */
static int columns_reserve(Columns *c, Py_ssize_t key_length, Py_ssize_t value_length) {
    if (grow_records(c) < 0) {
        return -1;
    }
    if (key_length > 0 && grow_blob(&c->keys, &c->keys_capacity, c->keys_bytes + key_length) < 0) {
        return -1;
    }
    if (value_length > 0 &&
        grow_blob(&c->values, &c->values_capacity, c->values_bytes + value_length) < 0) {
        return -1;
    }
    return 0;
}

/* RecordColumnsAPI.commit: append one record after columns_reserve succeeded;
 * returns its index. Lengths are NULL_LENGTH for null. Cannot fail. */
static Py_ssize_t columns_commit(Columns *c, const void *key, Py_ssize_t key_length,
                                 const void *value, Py_ssize_t value_length,
                                 int64_t timestamp_ms) {
    Py_ssize_t index = c->count;
    c->key_lengths[index] = (int32_t)key_length;
    c->value_lengths[index] = (int32_t)value_length;
    c->timestamps_ms[index] = timestamp_ms;
    if (key_length > 0) {
        memcpy(c->keys + c->keys_bytes, key, (size_t)key_length);
        c->keys_bytes += key_length;
    }
    if (value_length > 0) {
        memcpy(c->values + c->values_bytes, value, (size_t)value_length);
        c->values_bytes += value_length;
    }
    if (index == 0 || timestamp_ms < c->timestamp_min_ms) {
        c->timestamp_min_ms = timestamp_ms;
    }
    if (index == 0 || timestamp_ms > c->timestamp_max_ms) {
        c->timestamp_max_ms = timestamp_ms;
    }
    c->count = index + 1;
    return index;
}

static PyObject *columns_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "RecordColumns() takes no arguments");
        return NULL;
    }
    return type->tp_alloc(type, 0);   /* zeroed: no records, no buffers */
}

static void columns_dealloc(Columns *c) {
    PyMem_RawFree(c->key_lengths);
    PyMem_RawFree(c->value_lengths);
    PyMem_RawFree(c->timestamps_ms);
    PyMem_RawFree(c->keys);
    PyMem_RawFree(c->values);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

/* A key or value argument: None (NULL_LENGTH) or a C-contiguous bytes-like object. */
static int get_blob(PyObject *obj, const char *what, Py_buffer *view, Py_ssize_t *length) {
    if (obj == Py_None) {
        *length = NULL_LENGTH;
        return 0;
    }
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s must be bytes-like or None, got %.100s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    if (view->len > INT32_MAX) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_OverflowError, "%s of %zd bytes is too long for a record batch", what,
                     view->len);
        return -1;
    }
    *length = view->len;
    return 0;
}

/* append(key, value, timestamp_ms): for BatchBuilder.append. (The producer's
 * records come through RecordColumnsAPI instead, without a Python call.) */
static PyObject *columns_append(Columns *c, PyObject *args) {
    PyObject *key_obj, *value_obj;
    long long timestamp_ms;
    if (!PyArg_ParseTuple(args, "OOL:append", &key_obj, &value_obj, &timestamp_ms)) {
        return NULL;
    }
    Py_buffer key = {0}, value = {0};
    Py_ssize_t key_length, value_length;
    if (get_blob(key_obj, "key", &key, &key_length) < 0) {
        return NULL;
    }
    if (get_blob(value_obj, "value", &value, &value_length) < 0) {
        if (key_length >= 0) {
            PyBuffer_Release(&key);
        }
        return NULL;
    }
    PyObject *index = NULL;
    if (columns_reserve(c, key_length, value_length) == 0) {
        index = PyLong_FromSsize_t(columns_commit(c, key.buf, key_length, value.buf,
                                                  value_length, (int64_t)timestamp_ms));
    }
    if (key_length >= 0) {
        PyBuffer_Release(&key);
    }
    if (value_length >= 0) {
        PyBuffer_Release(&value);
    }
    return index;
}

static uint64_t padded_words(uint64_t bytes) { return (bytes + WORD_BYTES - 1) / WORD_BYTES; }

/* The sizes of the five blobs encode() writes, and the segment's words. */
static uint64_t columns_layout(const Columns *c, uint64_t blob_bytes[DATA_POINTERS]) {
    uint64_t column_bytes = (uint64_t)COLUMN_ENTRY_BYTES * (uint64_t)c->count;
    blob_bytes[DELTAS] = blob_bytes[KEY_LENGTHS] = blob_bytes[VALUE_LENGTHS] = column_bytes;
    blob_bytes[KEYS] = (uint64_t)c->keys_bytes;
    blob_bytes[VALUES] = (uint64_t)c->values_bytes;
    uint64_t segment_words = BLOBS_AT_WORD;
    for (int i = 0; i < DATA_POINTERS; i++) {
        segment_words += padded_words(blob_bytes[i]);
    }
    return segment_words;
}

static void put_int32_column(unsigned char *out, const int32_t *column, Py_ssize_t count) {
#if LAYOUT_HOST_IS_LITTLE_ENDIAN
    memcpy(out, column, (size_t)count * sizeof(int32_t));
#else
    for (Py_ssize_t i = 0; i < count; i++) {
        write_u32_le(out + COLUMN_ENTRY_BYTES * i, (uint32_t)column[i]);
    }
#endif
}

/* Write a byte-list pointer at segment word `at` to a blob at segment word `target`. */
static void put_data_pointer(unsigned char *segment, uint64_t at, uint64_t target,
                             uint64_t bytes) {
    unsigned char *p = segment + at * WORD_BYTES;
    write_u32_le(p, ((uint32_t)(target - at - 1) << 2) | LIST_POINTER_KIND);
    write_u32_le(p + 4, ((uint32_t)bytes << 3) | BYTE_ELEMENT_SIZE);
}

/* The fixed part: segment table, root pointer, data section, zeroed pointers. */
static void encode_fixed_words(unsigned char *out, const Columns *c, uint64_t segment_words,
                               int64_t producer_id, int32_t base_sequence) {
    memset(out, 0, SEGMENT_TABLE_BYTES + (size_t)WORD_BYTES * BLOBS_AT_WORD);
    write_u32_le(out + 4, (uint32_t)segment_words);
    unsigned char *segment = out + SEGMENT_TABLE_BYTES;
    write_u32_le(segment + 4, ROOT_POINTER_UPPER);
    unsigned char *data = segment + WORD_BYTES * DATA_AT_WORD;
    write_u32_le(data + RECORD_COUNT_AT, (uint32_t)c->count);
    write_u32_le(data + BASE_SEQUENCE_AT, (uint32_t)base_sequence ^ UINT32_MAX);
    write_u64_le(data + BASE_TIMESTAMP_AT, (uint64_t)c->timestamp_min_ms);
    write_u64_le(data + MAX_TIMESTAMP_AT, (uint64_t)c->timestamp_max_ms);
    write_u64_le(data + PRODUCER_ID_AT, (uint64_t)producer_id ^ UINT64_MAX);
}

/* The five Data blobs after the pointers, each pointed to and zero-padded. */
static void encode_blobs(unsigned char *segment, const Columns *c,
                         const uint64_t blob_bytes[DATA_POINTERS]) {
    uint64_t target = BLOBS_AT_WORD;
    for (int i = 0; i < DATA_POINTERS; i++) {
        put_data_pointer(segment, POINTERS_AT_WORD + i, target, blob_bytes[i]);
        unsigned char *blob = segment + target * WORD_BYTES;
        uint64_t padded_bytes = padded_words(blob_bytes[i]) * WORD_BYTES;
        memset(blob + blob_bytes[i], 0, (size_t)(padded_bytes - blob_bytes[i]));
        if (i == DELTAS) {
            for (Py_ssize_t r = 0; r < c->count; r++) {
                write_u32_le(blob + COLUMN_ENTRY_BYTES * r,
                             (uint32_t)((uint64_t)c->timestamps_ms[r] -
                                        (uint64_t)c->timestamp_min_ms));
            }
        } else if (i == KEY_LENGTHS || i == VALUE_LENGTHS) {
            put_int32_column(blob, i == KEY_LENGTHS ? c->key_lengths : c->value_lengths,
                             c->count);
        } else if (blob_bytes[i] > 0) {
            memcpy(blob, i == KEYS ? c->keys : c->values, (size_t)blob_bytes[i]);
        }
        target += padded_words(blob_bytes[i]);
    }
}

/* encode(producer_id, base_sequence, records_max) -> bytes. Refuses (ValueError, the
 * rule's message) columns that break a rule on the fields: the batch it writes
 * has only to pass the column rules, which it keeps by construction. */
static PyObject *columns_encode(Columns *c, PyObject *args) {
    long long producer_id, base_sequence;
    unsigned long long records_max;
    if (!PyArg_ParseTuple(args, "LLK:encode", &producer_id, &base_sequence, &records_max)) {
        return NULL;
    }
    if (base_sequence < INT32_MIN || base_sequence > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "baseSequence %lld does not fit an Int32", base_sequence);
        return NULL;
    }
    if (check_scalars((uint64_t)c->count, c->timestamp_min_ms, c->timestamp_max_ms,
                      producer_id, base_sequence, records_max) < 0) {
        return NULL;
    }
    uint64_t blob_bytes[DATA_POINTERS];
    uint64_t segment_words = columns_layout(c, blob_bytes);
    if (segment_words > UINT32_MAX) {
        PyErr_Format(PyExc_OverflowError, "record batch of %llu words is too large",
                     (unsigned long long)segment_words);
        return NULL;
    }
    PyObject *encoded = PyBytes_FromStringAndSize(
        NULL, (Py_ssize_t)(SEGMENT_TABLE_BYTES + WORD_BYTES * segment_words));
    if (encoded == NULL) {
        return NULL;
    }
    /* Written field by field, never cleared as a whole: that would touch every
     * page of a megabyte message twice. */
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(encoded);
    encode_fixed_words(out, c, segment_words, producer_id, (int32_t)base_sequence);
    encode_blobs(out + SEGMENT_TABLE_BYTES, c, blob_bytes);
    return encoded;
}

static PyObject *columns_encoded_bytes(Columns *c, void *closure) {
    uint64_t blob_bytes[DATA_POINTERS];
    return PyLong_FromUnsignedLongLong(SEGMENT_TABLE_BYTES +
                                       WORD_BYTES * columns_layout(c, blob_bytes));
}

static PyObject *columns_clear(Columns *c, PyObject *unused) {
    c->count = 0;
    c->keys_bytes = 0;
    c->values_bytes = 0;
    c->timestamp_min_ms = 0;
    c->timestamp_max_ms = 0;
    Py_RETURN_NONE;
}

static PyMethodDef columns_methods[] = {
    {"clear", (PyCFunction)columns_clear, METH_NOARGS,
     "clear(): no records, keeping the buffers for the next batch."},
    {"append", (PyCFunction)columns_append, METH_VARARGS,
     "append(key, value, timestamp_ms) -> index: one record; key and value bytes-like or None."},
    {"encode", (PyCFunction)columns_encode, METH_VARARGS,
     "encode(producer_id, base_sequence, records_max) -> bytes: the records as a RecordBatch\n"
     "without headers. ValueError (the rule's message) if the fields break a rule."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef columns_members[] = {
    {"record_count", T_PYSSIZET, offsetof(Columns, count), READONLY, "records appended"},
    {"keys_bytes", T_PYSSIZET, offsetof(Columns, keys_bytes), READONLY, "size of the keys blob"},
    {"values_bytes", T_PYSSIZET, offsetof(Columns, values_bytes), READONLY,
     "size of the values blob"},
    {"timestamp_min_ms", T_LONGLONG, offsetof(Columns, timestamp_min_ms), READONLY,
     "smallest timestamp (0 when empty)"},
    {"timestamp_max_ms", T_LONGLONG, offsetof(Columns, timestamp_max_ms), READONLY,
     "largest timestamp (0 when empty)"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef columns_getset[] = {
    {"encoded_bytes", (getter)columns_encoded_bytes, NULL,
     "len(encode(...)): the size of the batch these columns encode to", NULL},
    {NULL},
};

static PyTypeObject ColumnsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "plinth.format._record_batch.RecordColumns",
    .tp_doc = "The records of one batch, column by column. Not thread-safe on its own.",
    .tp_basicsize = sizeof(Columns),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = columns_new,
    .tp_dealloc = (destructor)columns_dealloc,
    .tp_methods = columns_methods,
    .tp_members = columns_members,
    .tp_getset = columns_getset,
};

/* ==== Checking a batch: Python functions ================================================ */

/* summary_type(...) built as tuple.__new__ does, without a Python-level __new__. */
static PyObject *new_summary(PyTypeObject *summary_type, const BatchFields *f) {
    PyObject *summary = summary_type->tp_alloc(summary_type, SUMMARY_FIELDS);
    if (summary == NULL) {
        return NULL;
    }
    PyObject *fields[SUMMARY_FIELDS] = {
        PyLong_FromUnsignedLongLong(f->record_count), PyLong_FromLongLong(f->max_timestamp_ms),
        PyLong_FromLongLong(f->base_timestamp_ms), PyLong_FromLongLong(f->producer_id),
        PyLong_FromLongLong(f->base_sequence),
        PyLong_FromLong(0),          /* producer_epoch: a Plinth batch has none */
    };
    int failed = 0;
    for (int i = 0; i < SUMMARY_FIELDS; i++) {
        if (fields[i] == NULL) {
            failed = 1;
        } else {
            PyTuple_SET_ITEM(summary, i, fields[i]);
        }
    }
    if (failed) {
        Py_DECREF(summary);         /* the unset items are NULL, which tuple dealloc skips */
        return NULL;
    }
    return summary;
}

/* summarize(batch, records_max, summary_type): the shard's check of a produced batch. */
static PyObject *summarize(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyType_Check(args[2]) ||
        !PyType_IsSubtype((PyTypeObject *)args[2], &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError,
                        "summarize(batch, records_max, summary_type): summary_type must be "
                        "a tuple subclass");
        return NULL;
    }
    unsigned long long records_max = PyLong_AsUnsignedLongLong(args[1]);
    if (records_max == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    BatchFields f;
    PyObject *result;
    if (!parse_canonical(&f, view.buf, view.len)) {
        result = Py_NewRef(Py_None);
    } else if (check_rules(&f, records_max) < 0) {
        result = NULL;
    } else {
        result = new_summary((PyTypeObject *)args[2], &f);
    }
    PyBuffer_Release(&view);
    return result;
}

/* check(records_max, record_count, base_timestamp_ms, max_timestamp_ms, producer_id,
 *       base_sequence, timestamp_deltas_ms, key_lengths, keys, value_lengths, values):
 * the rules on fields and columns another parser (pycapnp) read. */
static PyObject *check(PyObject *self, PyObject *args) {
    unsigned long long records_max, record_count;
    long long base_ms, max_ms, producer_id, base_sequence;
    Py_buffer columns[DATA_POINTERS];
    if (!PyArg_ParseTuple(args, "KKLLLLy*y*y*y*y*:check", &records_max, &record_count, &base_ms,
                          &max_ms, &producer_id, &base_sequence, &columns[DELTAS],
                          &columns[KEY_LENGTHS], &columns[KEYS], &columns[VALUE_LENGTHS],
                          &columns[VALUES])) {
        return NULL;   /* y* releases what it had acquired */
    }
    BatchFields f = {record_count, base_ms, max_ms, producer_id, base_sequence, {{0}}};
    for (int i = 0; i < DATA_POINTERS; i++) {
        f.columns[i].at = columns[i].buf;
        f.columns[i].bytes = (uint64_t)columns[i].len;
    }
    int failed = check_rules(&f, records_max) < 0;
    for (int i = 0; i < DATA_POINTERS; i++) {
        PyBuffer_Release(&columns[i]);
    }
    return failed ? NULL : Py_NewRef(Py_None);
}

/* (start, length) of a blob, as byte positions in the message; a null pointer's
 * empty blob has length 0 at the pointer's position (always inside the message). */
static PyObject *blob_span(const Blob *blob, const void *message) {
    return Py_BuildValue("(nK)", (Py_ssize_t)(blob->at - (const unsigned char *)message),
                         (unsigned long long)blob->bytes);
}

/* read_canonical(batch): what the canonical parser reads, no rule checked. */
static PyObject *read_canonical(PyObject *self, PyObject *batch) {
    Py_buffer view;
    if (PyObject_GetBuffer(batch, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    BatchFields f;
    PyObject *result;
    if (!parse_canonical(&f, view.buf, view.len)) {
        result = Py_NewRef(Py_None);
    } else {
        result = Py_BuildValue(
            "KLLLL(NNNNN)", (unsigned long long)f.record_count, (long long)f.base_timestamp_ms,
            (long long)f.max_timestamp_ms, (long long)f.producer_id, (long long)f.base_sequence,
            blob_span(&f.columns[DELTAS], view.buf), blob_span(&f.columns[KEY_LENGTHS], view.buf),
            blob_span(&f.columns[KEYS], view.buf), blob_span(&f.columns[VALUE_LENGTHS], view.buf),
            blob_span(&f.columns[VALUES], view.buf));
    }
    PyBuffer_Release(&view);
    return result;
}

static PyObject *is_word_aligned(PyObject *self, PyObject *buffer) {
    Py_buffer view;
    if (PyObject_GetBuffer(buffer, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    int aligned = (uintptr_t)view.buf % WORD_BYTES == 0;
    PyBuffer_Release(&view);
    return PyBool_FromLong(aligned);
}

/* ==== ConsumerRecord ========================================================================
 * A ConsumerRecord keeps offset and timestamp_ms as C integers and creates its
 * headers list on first access, so a record without headers costs no int or
 * list objects until someone reads them. It is created untracked by the cyclic GC
 * (it then holds only bytes, str, int or None, which cannot form a cycle) and is
 * tracked as soon as it holds anything else: a headers list, or a key or value a
 * deserializer replaced with a container. So hundreds of thousands of fetched
 * records add nothing to the collector's work. */

/* Record (the struct) and RecordType: declared in format/record_batch_internal.h. */

static int is_atomic(PyObject *o) {
    return o == Py_None || PyBytes_CheckExact(o) || PyUnicode_CheckExact(o) ||
           PyLong_CheckExact(o) || PyFloat_CheckExact(o);
}

static void track_if_container(Record *r, PyObject *o) {
    if (!is_atomic(o) && !PyObject_GC_IsTracked((PyObject *)r)) {
        PyObject_GC_Track((PyObject *)r);
    }
}

Record *record_alloc(void) {
    Record *r = PyObject_GC_New(Record, &RecordType);
    if (r == NULL) {
        return NULL;
    }
    r->topic = r->partition = r->key = r->value = r->headers = NULL;
    r->offset = r->timestamp_ms = 0;
    return r;
}

static PyObject *record_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"topic", "partition", "offset", "key", "value", "headers",
                             "timestamp_ms", NULL};
    PyObject *topic, *partition, *key, *value, *headers;
    long long offset, timestamp_ms;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOLOOOL:ConsumerRecord", kwlist, &topic,
                                     &partition, &offset, &key, &value, &headers,
                                     &timestamp_ms)) {
        return NULL;
    }
    Record *r = record_alloc();
    if (r == NULL) {
        return NULL;
    }
    PyObject *fields[] = {topic, partition, key, value, headers};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        Py_INCREF(fields[i]);
        track_if_container(r, fields[i]);
    }
    r->topic = topic;
    r->partition = partition;
    r->key = key;
    r->value = value;
    r->headers = headers;
    r->offset = offset;
    r->timestamp_ms = timestamp_ms;
    return (PyObject *)r;
}

static int record_traverse(Record *r, visitproc visit, void *arg) {
    Py_VISIT(r->topic);
    Py_VISIT(r->partition);
    Py_VISIT(r->key);
    Py_VISIT(r->value);
    Py_VISIT(r->headers);
    return 0;
}

static int record_clear(Record *r) {
    Py_CLEAR(r->topic);
    Py_CLEAR(r->partition);
    Py_CLEAR(r->key);
    Py_CLEAR(r->value);
    Py_CLEAR(r->headers);
    return 0;
}

static void record_dealloc(Record *r) {
    PyObject_GC_UnTrack(r);
    record_clear(r);
    PyObject_GC_Del(r);
}

/* Fields are plain members, so that the interpreter's specialized attribute
 * loads read them directly; every assignment passes through here first. */
static int record_setattro(PyObject *self, PyObject *name, PyObject *value) {
    if (value == NULL) {
        PyErr_Format(PyExc_AttributeError, "ConsumerRecord field %R cannot be deleted", name);
        return -1;
    }
    track_if_container((Record *)self, value);
    return PyObject_GenericSetAttr(self, name, value);
}

static PyObject *get_headers(Record *r, void *closure) {
    if (r->headers == NULL) {
        r->headers = PyList_New(0);
        if (r->headers == NULL) {
            return NULL;
        }
        track_if_container(r, r->headers);
    }
    return Py_NewRef(r->headers);
}

static int set_headers(Record *r, PyObject *value, void *closure) {
    Py_XSETREF(r->headers, Py_NewRef(value));   /* record_setattro refused NULL */
    return 0;
}

#define OBJECT_FIELD(name, doc) {#name, T_OBJECT_EX, offsetof(Record, name), 0, doc}

static PyMemberDef record_members[] = {
    OBJECT_FIELD(topic, "the topic's name"),
    OBJECT_FIELD(partition, "the partition number"),
    {"offset", T_LONGLONG, offsetof(Record, offset), 0, "the record's offset in its partition"},
    OBJECT_FIELD(key, "the key (bytes, or what key_deserializer made of it), None if null"),
    OBJECT_FIELD(value, "the value (bytes, or what value_deserializer made of it), None if null"),
    {"timestamp_ms", T_LONGLONG, offsetof(Record, timestamp_ms), 0,
     "the record's timestamp, ms since the epoch"},
    {NULL},
};

static PyGetSetDef record_getset[] = {
    {"headers", (getter)get_headers, (setter)set_headers,
     "list of (str, bytes), in the order the producer gave them (a Kafka producer's\n"
     "null header value is None; format/kafka_batch.py)", NULL},
    {NULL},
};

/* A field for comparing and pickling; None if a GC clear emptied it. */
static PyObject *field(PyObject *o) {
    return Py_NewRef(o != NULL ? o : Py_None);
}

/* (topic, partition, offset, key, value, headers, timestamp_ms) */
static PyObject *record_tuple(Record *r) {
    PyObject *headers = get_headers(r, NULL);
    if (headers == NULL) {
        return NULL;
    }
    return Py_BuildValue("(NNLNNNL)", field(r->topic), field(r->partition), r->offset,
                         field(r->key), field(r->value), headers, r->timestamp_ms);
}

static PyObject *record_richcompare(PyObject *a, PyObject *b, int op) {
    if ((op != Py_EQ && op != Py_NE) || !PyObject_TypeCheck(a, &RecordType) ||
        !PyObject_TypeCheck(b, &RecordType)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *ta = record_tuple((Record *)a);
    PyObject *tb = ta != NULL ? record_tuple((Record *)b) : NULL;
    PyObject *result = tb != NULL ? PyObject_RichCompare(ta, tb, op) : NULL;
    Py_XDECREF(ta);
    Py_XDECREF(tb);
    return result;
}

static PyObject *record_repr(Record *r) {
    PyObject *t = record_tuple(r);
    if (t == NULL) {
        return NULL;
    }
    PyObject *s = PyUnicode_FromFormat(
        "ConsumerRecord(topic=%R, partition=%S, offset=%S, key=%R, value=%R, headers=%R, "
        "timestamp_ms=%S)",
        PyTuple_GET_ITEM(t, 0), PyTuple_GET_ITEM(t, 1), PyTuple_GET_ITEM(t, 2),
        PyTuple_GET_ITEM(t, 3), PyTuple_GET_ITEM(t, 4), PyTuple_GET_ITEM(t, 5),
        PyTuple_GET_ITEM(t, 6));
    Py_DECREF(t);
    return s;
}

static PyObject *record_reduce(Record *r, PyObject *unused) {
    PyObject *t = record_tuple(r);
    return t != NULL ? Py_BuildValue("(ON)", (PyObject *)&RecordType, t) : NULL;
}

static PyMethodDef record_methods[] = {
    {"__reduce__", (PyCFunction)record_reduce, METH_NOARGS, "pickle by fields"},
    {NULL},
};

PyTypeObject RecordType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    /* Named after the module that re-exports it, so that pickles name that one. */
    .tp_name = "plinth.format.record_batch.ConsumerRecord",
    .tp_doc = PyDoc_STR(
        "ConsumerRecord(topic, partition, offset, key, value, headers, timestamp_ms)\n\n"
        "One record as the consumer sees it. Plain data, compared by value; any\n"
        "thread may read it. Fields may be assigned (the consumer's deserializers\n"
        "replace key and value), not deleted."),
    .tp_basicsize = sizeof(Record),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = record_new,
    .tp_dealloc = (destructor)record_dealloc,
    .tp_traverse = (traverseproc)record_traverse,
    .tp_clear = (inquiry)record_clear,
    .tp_richcompare = record_richcompare,
    .tp_hash = PyObject_HashNotImplemented,   /* headers is a mutable list */
    .tp_repr = (reprfunc)record_repr,
    .tp_members = record_members,
    .tp_getset = record_getset,
    .tp_setattro = record_setattro,
    .tp_methods = record_methods,
};

/* ==== Building the records of a batch (the consumer) ========================================
 * The consumer relies on the rules the shard ran before storing the batch (and on
 * the CRC that kept it since); what it checks here is only what keeps this code
 * inside its buffers and its numbers inside Int64, and nothing a batch that keeps
 * the rules could fail: columns of the same whole number of entries, lengths of
 * -1 or more that stay inside their blob, an offset and a timestamp per record
 * that fit Int64. A batch that fails raises ValueError before any record is
 * built; record_batch.py reports it as CorruptDataError. */

/* Where the next key (or value) starts, walking its lengths column. */
typedef struct {
    const unsigned char *lengths;   /* record_count Int32 LE */
    const unsigned char *blob;
    Py_ssize_t blob_bytes;
    Py_ssize_t position;            /* where the next non-null entry starts in blob */
} BlobCursor;

typedef struct {
    PyObject *topic;
    PyObject *partition;
    long long base_offset;
    long long base_timestamp_ms;
    long long offset_min;           /* build the records from this offset on */
    Py_ssize_t record_count;        /* set by check_bounds */
    Py_ssize_t first;               /* set by check_bounds: the first record to build */
    Blob columns[DATA_POINTERS];
} BatchRecords;

/* Every entry a slice of its blob: length >= -1, inside what is left; sets
 * cursor->position to where record `first` starts. 0, or -1 with ValueError. */
static int check_entries(const char *what, BlobCursor *cursor, Py_ssize_t record_count,
                         Py_ssize_t first) {
    Py_ssize_t position = 0;
    for (Py_ssize_t i = 0; i < record_count; i++) {
        if (i == first) {
            cursor->position = position;
        }
        int32_t length = read_i32_le(cursor->lengths + COLUMN_ENTRY_BYTES * i);
        if (length < NULL_LENGTH) {
            PyErr_Format(PyExc_ValueError, "%s length of record %zd is %d, must be >= -1",
                         what, i, (int)length);
            return -1;
        }
        if (length > 0 && length > cursor->blob_bytes - position) {
            PyErr_Format(PyExc_ValueError,
                         "%s of record %zd (%d bytes at %zd) runs past the %zd bytes of %ss",
                         what, i, (int)length, position, cursor->blob_bytes, what);
            return -1;
        }
        position += length > 0 ? length : 0;
    }
    if (first == record_count) {
        cursor->position = position;
    }
    return 0;
}

/* Every record's timestamp fits Int64: the largest delta's does. Exact, so that a
 * batch the rules accept (base + largest delta == maxTimestampMs) always passes. */
static int check_timestamps(const BatchRecords *b) {
    const unsigned char *deltas = b->columns[DELTAS].at;
    uint32_t delta_max_ms = 0;
    Py_ssize_t record_max = 0;
    for (Py_ssize_t i = 0; i < b->record_count; i++) {
        uint32_t delta_ms = read_u32_le(deltas + COLUMN_ENTRY_BYTES * i);
        if (delta_ms > delta_max_ms) {
            delta_max_ms = delta_ms;
            record_max = i;
        }
    }
    long long timestamp_ms;
    if (__builtin_add_overflow(b->base_timestamp_ms, (long long)delta_max_ms, &timestamp_ms)) {
        PyErr_Format(PyExc_ValueError,
                     "timestamp of record %zd (base %lld ms + delta %u ms) overflows Int64",
                     record_max, b->base_timestamp_ms, (unsigned)delta_max_ms);
        return -1;
    }
    return 0;
}

/* The index of the record with offset offset_min, clamped to 0..record_count. */
static Py_ssize_t first_record(long long base_offset, long long offset_min,
                               Py_ssize_t record_count) {
    if (offset_min <= base_offset) {
        return 0;
    }
    uint64_t skip = (uint64_t)offset_min - (uint64_t)base_offset;
    return skip < (uint64_t)record_count ? (Py_ssize_t)skip : record_count;
}

static int check_bounds(BatchRecords *b) {
    uint64_t column_bytes = b->columns[DELTAS].bytes;
    if (column_bytes % COLUMN_ENTRY_BYTES != 0 || b->columns[KEY_LENGTHS].bytes != column_bytes ||
        b->columns[VALUE_LENGTHS].bytes != column_bytes) {
        PyErr_Format(PyExc_ValueError,
                     "columns of %llu (deltas), %llu (key lengths) and %llu (value lengths) "
                     "bytes: must be equal multiples of 4", (unsigned long long)column_bytes,
                     (unsigned long long)b->columns[KEY_LENGTHS].bytes,
                     (unsigned long long)b->columns[VALUE_LENGTHS].bytes);
        return -1;
    }
    b->record_count = (Py_ssize_t)(column_bytes / COLUMN_ENTRY_BYTES);
    b->first = first_record(b->base_offset, b->offset_min, b->record_count);
    if (b->base_offset < 0 || b->base_offset > LLONG_MAX - b->record_count) {
        PyErr_Format(PyExc_ValueError, "base offset %lld with %zd records overflows Int64",
                     b->base_offset, b->record_count);
        return -1;
    }
    return check_timestamps(b);
}

/* The next entry as bytes (None for a null one); the cursor was checked. */
static PyObject *next_slice(BlobCursor *cursor, Py_ssize_t index) {
    int32_t length = read_i32_le(cursor->lengths + COLUMN_ENTRY_BYTES * index);
    if (length == NULL_LENGTH) {
        return Py_NewRef(Py_None);
    }
    PyObject *slice = PyBytes_FromStringAndSize((const char *)cursor->blob + cursor->position,
                                                length);
    cursor->position += length;
    return slice;
}

static Record *build_one(const BatchRecords *b, BlobCursor *keys, BlobCursor *values,
                         Py_ssize_t i) {
    Record *r = record_alloc();
    if (r == NULL) {
        return NULL;
    }
    r->topic = Py_NewRef(b->topic);
    r->partition = Py_NewRef(b->partition);
    r->offset = b->base_offset + i;
    r->timestamp_ms = b->base_timestamp_ms +
                      (long long)read_u32_le(b->columns[DELTAS].at + COLUMN_ENTRY_BYTES * i);
    r->key = next_slice(keys, i);
    r->value = r->key != NULL ? next_slice(values, i) : NULL;
    if (r->value == NULL) {
        Py_DECREF(r);
        return NULL;
    }
    return r;
}

/* Records first .. record_count - 1, once every bound is checked. */
static PyObject *build_list(BatchRecords *b) {
    BlobCursor keys = {b->columns[KEY_LENGTHS].at, b->columns[KEYS].at,
                       (Py_ssize_t)b->columns[KEYS].bytes, 0};
    BlobCursor values = {b->columns[VALUE_LENGTHS].at, b->columns[VALUES].at,
                         (Py_ssize_t)b->columns[VALUES].bytes, 0};
    if (check_bounds(b) < 0 || check_entries("key", &keys, b->record_count, b->first) < 0 ||
        check_entries("value", &values, b->record_count, b->first) < 0) {
        return NULL;
    }
    PyObject *records = PyList_New(b->record_count - b->first);
    if (records == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = b->first; i < b->record_count; i++) {
        Record *r = build_one(b, &keys, &values, i);
        if (r == NULL) {
            Py_DECREF(records);   /* the unset items are NULL, which list_dealloc skips */
            return NULL;
        }
        PyList_SET_ITEM(records, i - b->first, (PyObject *)r);
    }
    return records;
}

/* build_records(topic, partition, base_offset, offset_min, base_timestamp_ms,
 *               timestamp_deltas_ms, key_lengths, keys, value_lengths, values) */
static PyObject *build_records(PyObject *self, PyObject *args) {
    BatchRecords b;
    Py_buffer columns[DATA_POINTERS];
    if (!PyArg_ParseTuple(args, "OOLLLy*y*y*y*y*:build_records", &b.topic, &b.partition,
                          &b.base_offset, &b.offset_min, &b.base_timestamp_ms, &columns[DELTAS],
                          &columns[KEY_LENGTHS], &columns[KEYS], &columns[VALUE_LENGTHS],
                          &columns[VALUES])) {
        return NULL;   /* y* releases what it had acquired */
    }
    for (int i = 0; i < DATA_POINTERS; i++) {
        b.columns[i].at = columns[i].buf;
        b.columns[i].bytes = (uint64_t)columns[i].len;
    }
    PyObject *records = build_list(&b);
    for (int i = 0; i < DATA_POINTERS; i++) {
        PyBuffer_Release(&columns[i]);
    }
    return records;
}

/* decode_canonical(topic, partition, base_offset, offset_min, batch): the records
 * of a canonical batch from offset_min on; None for another layout. */
static PyObject *decode_canonical(PyObject *self, PyObject *args) {
    BatchRecords b;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "OOLLy*:decode_canonical", &b.topic, &b.partition,
                          &b.base_offset, &b.offset_min, &view)) {
        return NULL;
    }
    BatchFields f;
    PyObject *records;
    if (!parse_canonical(&f, view.buf, view.len)) {
        records = Py_NewRef(Py_None);
    } else {
        memcpy(b.columns, f.columns, sizeof b.columns);
        b.base_timestamp_ms = f.base_timestamp_ms;
        records = build_list(&b);
    }
    PyBuffer_Release(&view);
    return records;
}

/* ==== The module ================================================================================ */

static PyMethodDef methods[] = {
    {"summarize", (PyCFunction)(void (*)(void))summarize, METH_FASTCALL,
     "summarize(batch, records_max, summary_type) -> summary_type(record_count,\n"
     "max_timestamp_ms, base_timestamp_ms, producer_id, base_sequence, producer_epoch=0) for\n"
     "a RecordBatch in the canonical layout that keeps every rule; ValueError (the rule\n"
     "broken, with its numbers) for one that does not; None for any other layout."},
    {"check", check, METH_VARARGS,
     "check(records_max, record_count, base_timestamp_ms, max_timestamp_ms, producer_id,\n"
     "      base_sequence, timestamp_deltas_ms, key_lengths, keys, value_lengths, values)\n"
     "-> None: the same rules on fields another parser read; ValueError if one is broken."},
    {"read_canonical", read_canonical, METH_O,
     "read_canonical(batch) -> (record_count, base_timestamp_ms, max_timestamp_ms,\n"
     "producer_id, base_sequence, ((start, length) x 5)) as the canonical parser reads\n"
     "it, no rule checked; None for any other layout."},
    {"is_word_aligned", is_word_aligned, METH_O,
     "is_word_aligned(buffer) -> bool: whether its first byte is 8-byte aligned."},
    {"build_records", build_records, METH_VARARGS,
     "build_records(topic, partition, base_offset, offset_min, base_timestamp_ms,\n"
     "              timestamp_deltas_ms, key_lengths, keys, value_lengths, values)\n"
     "-> list of ConsumerRecord, for the records of the batch from offset_min on.\n"
     "ValueError if a bound is broken (the bounds only: the shard checked the rules)."},
    {"decode_canonical", decode_canonical, METH_VARARGS,
     "decode_canonical(topic, partition, base_offset, offset_min, batch) -> list of\n"
     "ConsumerRecord from offset_min on, for a batch in the canonical layout; None for\n"
     "any other layout; ValueError as build_records."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "plinth.format._record_batch",
    "RecordBatch in C: encode columns, check a batch, build its records.", -1, methods,
};

static const RecordColumnsAPI record_columns_api = {
    RECORD_COLUMNS_API_VERSION, &ColumnsType, columns_reserve, columns_commit,
};

static int add_constants(PyObject *m) {
    const char *names[] = {"RECORD_OVERHEAD_BYTES", "BATCH_OVERHEAD_BYTES",
                           "RECORD_HEADERS_OVERHEAD_BYTES", "HEADER_OVERHEAD_BYTES",
                           "TIMESTAMP_SPAN_MS_MAX"};
    long long values[] = {RECORD_OVERHEAD_BYTES, BATCH_OVERHEAD_BYTES,
                          RECORD_HEADERS_OVERHEAD_BYTES, HEADER_OVERHEAD_BYTES,
                          TIMESTAMP_SPAN_MS_MAX};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        PyObject *value = PyLong_FromLongLong(values[i]);
        if (value == NULL || PyModule_AddObject(m, names[i], value) < 0) {
            Py_XDECREF(value);
            return -1;
        }
    }
    PyObject *capsule = PyCapsule_New((void *)&record_columns_api, RECORD_COLUMNS_API_CAPSULE,
                                      NULL);
    if (capsule == NULL || PyModule_AddObject(m, "_C_API", capsule) < 0) {
        Py_XDECREF(capsule);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC PyInit__record_batch(void) {
    if (PyType_Ready(&ColumnsType) < 0 || PyType_Ready(&RecordType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "RecordColumns", (PyObject *)&ColumnsType) < 0 ||
        PyModule_AddObjectRef(m, "ConsumerRecord", (PyObject *)&RecordType) < 0 ||
        PyModule_AddFunctions(m, kafka_batch_methods) < 0 || add_constants(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
