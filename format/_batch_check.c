/* The shard's fast check of a RecordBatch in its canonical layout: one pass over
 * the message, no pycapnp reader and no numpy arrays. Imported by
 * format/record_batch.py (summarize_batch); required (setup.py builds it).
 *
 * Why C: for the small batches of a latency-bound producer (a few records),
 * summarize_batch cost about 25 us in pycapnp's from_bytes, copying the fields
 * out and a dozen small numpy calls; one pass here costs well under 1 us.
 *
 * summarize(batch, records_max, summary_type) accepts only the layout below,
 * which is what client/_producer.c (and pycapnp, for the same fields set in
 * schema order) writes for a batch without headers, and only a batch that
 * keeps every rule of the schema. It returns summary_type(record_count,
 * max_timestamp_ms, base_timestamp_ms, producer_id, base_sequence) for such a
 * batch and None for anything else: another layout of the same message (other
 * struct sizes, several segments, far pointers, blobs out of order or
 * overlapping, headers), bytes that do not parse, and a batch that breaks a
 * rule. The caller then checks it with pycapnp and numpy, which accept every
 * valid layout and write every error message; so this code never raises on
 * untrusted bytes and never needs to say what is wrong.
 *
 * Layout accepted (all integers little-endian; a word is 8 bytes; "segment
 * word n" starts at byte 8 + 8n of the message):
 *
 *   word 0             segment table: UInt32 0 (one segment),
 *                      UInt32 segment words = message bytes / 8 - 1
 *   segment word 0     root pointer: UInt32 0 (struct, offset 0),
 *                      UInt16 4 data words, UInt16 6 pointer words
 *   segment word 1     UInt32 recordCount, Int32 baseSequence XOR -1 (its default)
 *   segment word 2     Int64 baseTimestampMs
 *   segment word 3     Int64 maxTimestampMs
 *   segment word 4     Int64 producerId XOR -1 (its default)
 *   segment words 5-9  Data pointers: timestampDeltasMs, keyLengths, keys,
 *                      valueLengths, values. Each is null (all zero: an empty
 *                      blob) or a list pointer: UInt32 (offset words << 2) | 1,
 *                      UInt32 (bytes << 3) | 2 (element size: byte), whose
 *                      target (pointer word + 1 + offset) is the word right
 *                      after the previous blob (after the pointers for the first)
 *   segment word 10    headers pointer: null
 *   segment words 11-  the blobs, each padded to a word; the last one ends the
 *                      segment
 *
 * Blobs laid end to end cannot overlap, so the words read equal the message's
 * words, well within pycapnp's traversal limit (record_batch.py): the slow
 * path would read the same fields from the same bytes.
 *
 * column_spans(batch, records_max) takes the same batches and returns where
 * its five columns are in the message (for the consumer's decode_records).
 *
 * Any thread holding the GIL may call into this module; it keeps the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define WORD_BYTES 8
#define ROOT_DATA_WORDS 4
#define ROOT_POINTER_WORDS 6
#define ROOT_POINTER_UPPER (ROOT_DATA_WORDS | (ROOT_POINTER_WORDS << 16))
#define DATA_POINTERS 5
#define POINTERS_AT_WORD (1 + ROOT_DATA_WORDS)               /* segment word 5 */
#define HEADERS_POINTER_WORD (POINTERS_AT_WORD + DATA_POINTERS)
#define BLOBS_AT_WORD (POINTERS_AT_WORD + ROOT_POINTER_WORDS) /* segment word 11 */
#define LIST_POINTER_KIND 1u
#define BYTE_ELEMENT_SIZE 2u
#define OFFSET_SIGN_BIT (1u << 29)       /* of the 30-bit signed pointer offset */
#define COLUMN_ENTRY_BYTES 4
#define NULL_LENGTH (-1)
#define SUMMARY_FIELDS 5

enum { DELTAS, KEY_LENGTHS, KEYS, VALUE_LENGTHS, VALUES };

/* Unaligned little-endian loads: the message may sit at any address (a ZeroMQ
 * frame), and memcpy compiles to one load. */
static uint32_t read_u32_le(const unsigned char *p) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
#else
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
#endif
}

static int32_t read_i32_le(const unsigned char *p) {
    return (int32_t)read_u32_le(p);
}

static uint64_t read_u64_le(const unsigned char *p) {
    return (uint64_t)read_u32_le(p) | ((uint64_t)read_u32_le(p + 4) << 32);
}

typedef struct {
    const unsigned char *at;
    uint64_t bytes;
} Blob;

/* The message as parsed; every field as the schema defines it. */
typedef struct {
    const unsigned char *segment;
    uint64_t segment_words;
    uint64_t next_blob_word;       /* where the next blob must start */
    uint32_t record_count;
    int32_t base_sequence;
    int64_t base_timestamp_ms;
    int64_t max_timestamp_ms;
    int64_t producer_id;
    Blob blobs[DATA_POINTERS];
} Batch;

/* --- The layout ------------------------------------------------------------------ */

/* Segment table and root pointer; 1 if canonical. */
static int parse_head(Batch *b, const unsigned char *message, Py_ssize_t message_bytes) {
    if (message_bytes < WORD_BYTES * (1 + BLOBS_AT_WORD) || message_bytes % WORD_BYTES != 0) {
        return 0;
    }
    b->segment = message + WORD_BYTES;
    b->segment_words = (uint64_t)message_bytes / WORD_BYTES - 1;
    if (read_u32_le(message) != 0 || read_u32_le(message + 4) != b->segment_words) {
        return 0;
    }
    return read_u32_le(b->segment) == 0 && read_u32_le(b->segment + 4) == ROOT_POINTER_UPPER;
}

static void parse_data_section(Batch *b) {
    const unsigned char *data = b->segment + WORD_BYTES;
    b->record_count = read_u32_le(data);
    b->base_sequence = (int32_t)(read_u32_le(data + 4) ^ UINT32_MAX);
    b->base_timestamp_ms = (int64_t)read_u64_le(data + 8);
    b->max_timestamp_ms = (int64_t)read_u64_le(data + 16);
    b->producer_id = (int64_t)(read_u64_le(data + 24) ^ UINT64_MAX);
}

/* The Data pointer at segment word `pointer_word`; 1 if canonical and in bounds. */
static int parse_blob(Batch *b, uint64_t pointer_word, Blob *blob) {
    const unsigned char *pointer = b->segment + WORD_BYTES * pointer_word;
    uint32_t lower = read_u32_le(pointer), upper = read_u32_le(pointer + 4);
    if (lower == 0 && upper == 0) {          /* null: capnp reads an empty Data */
        blob->at = pointer;
        blob->bytes = 0;
        return 1;
    }
    uint32_t offset_words = lower >> 2;
    if ((lower & 3u) != LIST_POINTER_KIND || (upper & 7u) != BYTE_ELEMENT_SIZE ||
        (offset_words & OFFSET_SIGN_BIT) != 0 ||
        pointer_word + 1 + offset_words != b->next_blob_word) {
        return 0;
    }
    uint64_t bytes = upper >> 3;
    uint64_t words = (bytes + WORD_BYTES - 1) / WORD_BYTES;
    if (words > b->segment_words - b->next_blob_word) {    /* next_blob_word <= segment_words */
        return 0;
    }
    blob->at = b->segment + WORD_BYTES * b->next_blob_word;
    blob->bytes = bytes;
    b->next_blob_word += words;
    return 1;
}

/* The whole canonical layout, bounds-checked; 1 if the batch has it. */
static int parse_batch(Batch *b, const unsigned char *message, Py_ssize_t message_bytes) {
    if (!parse_head(b, message, message_bytes)) {
        return 0;
    }
    parse_data_section(b);
    b->next_blob_word = BLOBS_AT_WORD;
    for (int i = 0; i < DATA_POINTERS; i++) {
        if (!parse_blob(b, POINTERS_AT_WORD + i, &b->blobs[i])) {
            return 0;
        }
    }
    return read_u64_le(b->segment + WORD_BYTES * HEADERS_POINTER_WORD) == 0 &&
           b->next_blob_word == b->segment_words;
}

/* --- The rules of the schema (record_batch.py: _check_columns) -------------------- */

/* No length below -1, and the non-null lengths add up to the blob's size. One
 * pass without an early exit and with a size_t index (a uint32_t one may wrap,
 * which stops gcc -O3 vectorizing): the three columns of 8,000 records take
 * about 7 us instead of 14. */
static int lengths_ok(const Blob *lengths, uint32_t record_count, uint64_t blob_bytes) {
    int32_t length_min = 0;
    uint64_t sum_bytes = 0;             /* at most 2^32 records x 2^31 bytes: no overflow */
    for (size_t i = 0; i < record_count; i++) {
        int32_t length = read_i32_le(lengths->at + COLUMN_ENTRY_BYTES * i);
        length_min = length < length_min ? length : length_min;
        sum_bytes += length > 0 ? (uint64_t)length : 0;
    }
    return length_min >= NULL_LENGTH && sum_bytes == blob_bytes;
}

/* min(delta) == 0 and max(delta) == maxTimestampMs - baseTimestampMs; vectorized
 * like lengths_ok. */
static int deltas_ok(const Batch *b) {
    if (b->max_timestamp_ms < b->base_timestamp_ms) {
        return 0;
    }
    uint64_t span_ms = (uint64_t)b->max_timestamp_ms - (uint64_t)b->base_timestamp_ms;
    uint32_t delta_min_ms = UINT32_MAX, delta_max_ms = 0;
    for (size_t i = 0; i < b->record_count; i++) {
        uint32_t delta_ms = read_u32_le(b->blobs[DELTAS].at + COLUMN_ENTRY_BYTES * i);
        delta_min_ms = delta_ms < delta_min_ms ? delta_ms : delta_min_ms;
        delta_max_ms = delta_ms > delta_max_ms ? delta_ms : delta_max_ms;
    }
    return delta_min_ms == 0 && delta_max_ms == span_ms;
}

static int rules_ok(const Batch *b, unsigned long long records_max) {
    uint64_t column_bytes = (uint64_t)COLUMN_ENTRY_BYTES * b->record_count;
    if (b->record_count < 1 || b->record_count > records_max ||
        b->blobs[DELTAS].bytes != column_bytes || b->blobs[KEY_LENGTHS].bytes != column_bytes ||
        b->blobs[VALUE_LENGTHS].bytes != column_bytes) {
        return 0;
    }
    if (b->producer_id < -1 || b->base_sequence < -1 ||
        (b->producer_id >= 0 && b->base_sequence < 0)) {
        return 0;
    }
    return lengths_ok(&b->blobs[KEY_LENGTHS], b->record_count, b->blobs[KEYS].bytes) &&
           lengths_ok(&b->blobs[VALUE_LENGTHS], b->record_count, b->blobs[VALUES].bytes) &&
           deltas_ok(b);
}

/* --- Python ------------------------------------------------------------------------ */

/* summary_type(...) built as tuple.__new__ does, without a Python-level __new__. */
static PyObject *new_summary(PyTypeObject *summary_type, const Batch *b) {
    PyObject *summary = summary_type->tp_alloc(summary_type, SUMMARY_FIELDS);
    if (summary == NULL) {
        return NULL;
    }
    PyObject *fields[SUMMARY_FIELDS] = {
        PyLong_FromUnsignedLong(b->record_count), PyLong_FromLongLong(b->max_timestamp_ms),
        PyLong_FromLongLong(b->base_timestamp_ms), PyLong_FromLongLong(b->producer_id),
        PyLong_FromLong(b->base_sequence),
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

/* Parse and check `batch` against records_max: -1 with an error set (nothing to
 * release), 0 if it is not a valid canonical batch (nothing to release), 1 if it
 * is: *b describes it and *view holds its buffer, which the caller releases. */
static int check_canonical(PyObject *batch, PyObject *records_max_obj, Batch *b,
                           Py_buffer *view) {
    unsigned long long records_max = PyLong_AsUnsignedLongLong(records_max_obj);
    if (records_max == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    if (PyObject_GetBuffer(batch, view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (parse_batch(b, view->buf, view->len) && rules_ok(b, records_max)) {
        return 1;
    }
    PyBuffer_Release(view);
    return 0;
}

static PyObject *summarize(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyType_Check(args[2]) ||
        !PyType_IsSubtype((PyTypeObject *)args[2], &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError,
                        "summarize(batch, records_max, summary_type): summary_type must be "
                        "a tuple subclass");
        return NULL;
    }
    Batch b;
    Py_buffer view;
    int canonical = check_canonical(args[0], args[1], &b, &view);
    if (canonical <= 0) {
        return canonical < 0 ? NULL : Py_NewRef(Py_None);
    }
    PyObject *result = new_summary((PyTypeObject *)args[2], &b);
    PyBuffer_Release(&view);
    return result;
}

/* (start, length) of a blob, as byte positions in the message; a null pointer's
 * empty blob has length 0 at the pointer's position (always inside the message). */
static PyObject *blob_span(const Blob *blob, const void *message) {
    return Py_BuildValue("(nK)", (Py_ssize_t)(blob->at - (const unsigned char *)message),
                         (unsigned long long)blob->bytes);
}

/* (record_count, base_timestamp_ms, ((start, length) of each of the five Data
 * blobs, in schema order, as byte positions in the message)) of a valid batch
 * in the canonical layout; None for anything else. For the consumer, which
 * cuts the columns out of the message it holds and builds the records. */
static PyObject *column_spans(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "column_spans(batch, records_max)");
        return NULL;
    }
    Batch b;
    Py_buffer view;
    int canonical = check_canonical(args[0], args[1], &b, &view);
    if (canonical <= 0) {
        return canonical < 0 ? NULL : Py_NewRef(Py_None);
    }
    PyObject *result = Py_BuildValue(
        "IL(NNNNN)", b.record_count, (long long)b.base_timestamp_ms,
        blob_span(&b.blobs[DELTAS], view.buf), blob_span(&b.blobs[KEY_LENGTHS], view.buf),
        blob_span(&b.blobs[KEYS], view.buf), blob_span(&b.blobs[VALUE_LENGTHS], view.buf),
        blob_span(&b.blobs[VALUES], view.buf));
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

static PyMethodDef methods[] = {
    {"summarize", (PyCFunction)(void (*)(void))summarize, METH_FASTCALL,
     "summarize(batch, records_max, summary_type) -> summary_type(record_count,\n"
     "max_timestamp_ms, base_timestamp_ms, producer_id, base_sequence) for a valid\n"
     "RecordBatch in the canonical layout; None for anything else."},
    {"column_spans", (PyCFunction)(void (*)(void))column_spans, METH_FASTCALL,
     "column_spans(batch, records_max) -> (record_count, base_timestamp_ms,\n"
     "((start, length) x 5: timestampDeltasMs, keyLengths, keys, valueLengths, values))\n"
     "for a valid RecordBatch in the canonical layout; None for anything else."},
    {"is_word_aligned", is_word_aligned, METH_O,
     "is_word_aligned(buffer) -> bool: whether its first byte is 8-byte aligned."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "plinth.format._batch_check",
    "The fast check of a RecordBatch in its canonical layout.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__batch_check(void) {
    return PyModule_Create(&module);
}
