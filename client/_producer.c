/* The producer's per-record path in C: record columns, record futures and the
 * fast append. Imported by format/record_batch.py, client/futures.py and
 * client/accumulator.py; required (setup.py builds it at install).
 *
 * RecordColumns   the records of one batch, column by column, in growable C
 *                 buffers (no Python object per record), and their encoding
 *                 as a RecordBatch message without headers (encode()).
 * FutureBase      the storage of RecordFuture (client/futures.py): the batch's
 *                 BatchResult and the record's index.
 * Appender        the open batch (columns, result) of each topic and partition,
 *                 and append(): partition choice (explicit, Kafka's murmur2 of
 *                 the key, or the sticky partition) and one record appended to
 *                 an open batch that has room, returning its future; or None,
 *                 changing nothing, when the record needs the accumulator's slow
 *                 path (no open batch, the batch would fill or its timestamps
 *                 would span more than a UInt32 of ms, the buffer is full, a
 *                 topic not yet registered, an argument not of the plain type).
 * ProducerBase    the base of Producer: send() parses the common call and
 *                 appends with the Appender in one C call; anything else goes
 *                 to Producer._send, in Python, with the same arguments.
 *
 * Threads and the GIL. Every function here keeps the GIL and, from the moment it
 * reads shared state to its last change of it, calls nothing that can run Python
 * code or release the GIL (no Python callbacks; the future, a GC-tracked object
 * whose allocation may start a collection, is allocated before), so each call is
 * atomic with respect to other Python threads. The accumulator relies on that:
 * append() takes no lock. Keeping the GIL is also the fast choice: releasing it
 * per call would make each send wait for the sender thread.
 *
 * RecordBatch encoding (schemas/record_batch.capnp, one Cap'n Proto segment, laid
 * out as pycapnp lays out RecordBatch.new_message(...) with the columns set in
 * schema order, so the bytes are identical):
 *
 *   word 0      segment table: UInt32 0 (one segment), UInt32 segment size in words
 *   segment word 0      root pointer: struct at offset 0, 4 data words, 6 pointers
 *   segment words 1-4   data: recordCount UInt32, baseSequence Int32 XOR -1 (its
 *                       default), baseTimestampMs Int64, maxTimestampMs Int64,
 *                       producerId Int64 XOR -1 (its default)
 *   segment words 5-10  pointers: timestampDeltasMs, keyLengths, keys,
 *                       valueLengths, values (byte lists), headers (null here)
 *   then the five Data blobs in that order, each padded with zeros to a word.
 *
 * All integers little-endian.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "kafka_murmur2.h"

/* What one record counts against batch_bytes_max and buffer_memory, besides its
 * key and value: its lengths and timestamp in the columns (client/accumulator.py). */
#define RECORD_OVERHEAD_BYTES 16
#define NULL_LENGTH (-1)
#define WORD_BYTES 8
#define ROOT_DATA_WORDS 4
#define ROOT_POINTER_WORDS 6
#define DATA_POINTERS 5
/* A Cap'n Proto list pointer holds an element count of 29 bits. */
#define BLOB_BYTES_MAX ((Py_ssize_t)((1u << 29) - 1))
#define COLUMNS_RECORDS_INITIAL 64
#define COLUMNS_BLOB_BYTES_INITIAL 4096

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define PLINTH_LITTLE_ENDIAN 1
#else
#define PLINTH_LITTLE_ENDIAN 0
#endif

static void put_le32(unsigned char *out, uint32_t v) {
    out[0] = (unsigned char)v;
    out[1] = (unsigned char)(v >> 8);
    out[2] = (unsigned char)(v >> 16);
    out[3] = (unsigned char)(v >> 24);
}

static void put_le64(unsigned char *out, uint64_t v) {
    put_le32(out, (uint32_t)v);
    put_le32(out + 4, (uint32_t)(v >> 32));
}

static int check_arg_count(const char *name, Py_ssize_t nargs, Py_ssize_t expected) {
    if (nargs != expected) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd positional arguments (%zd given)", name,
                     expected, nargs);
        return 0;
    }
    return 1;
}

/* ---- RecordColumns -------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    Py_ssize_t count;               /* records */
    Py_ssize_t capacity;            /* records the three arrays hold */
    int32_t *key_lengths;           /* -1: null key */
    int32_t *value_lengths;         /* -1: null value */
    int64_t *timestamps_ms;
    unsigned char *keys;            /* the non-null keys, concatenated */
    Py_ssize_t keys_bytes, keys_capacity;
    unsigned char *values;          /* the non-null values, concatenated */
    Py_ssize_t values_bytes, values_capacity;
    int64_t timestamp_min_ms, timestamp_max_ms;
    /* Sum over records of RECORD_OVERHEAD_BYTES + key and value lengths. */
    Py_ssize_t accounted_bytes;
} Columns;

static PyTypeObject ColumnsType;

static int grow_blob(unsigned char **blob, Py_ssize_t *capacity, Py_ssize_t needed) {
    if (needed <= *capacity) {
        return 0;
    }
    if (needed > BLOB_BYTES_MAX) {
        PyErr_Format(PyExc_OverflowError, "record batch blob of %zd bytes is over %zd",
                     needed, BLOB_BYTES_MAX);
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

/* Make room for one more record; changes no record. -1 with an exception set. */
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

/* Append one record after columns_reserve succeeded; returns its index. Lengths
 * are -1 for null. Cannot fail. */
static Py_ssize_t columns_commit(Columns *c, const void *key, Py_ssize_t key_length,
                                 const void *value, Py_ssize_t value_length, int64_t timestamp_ms) {
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
    c->accounted_bytes += RECORD_OVERHEAD_BYTES + (key_length > 0 ? key_length : 0) +
                          (value_length > 0 ? value_length : 0);
    c->count = index + 1;
    return index;
}

/* Whether the batch's timestamps, with timestamp_ms, still span at most a UInt32
 * of ms (the timestampDeltasMs column). */
static int columns_span_fits(const Columns *c, int64_t timestamp_ms) {
    if (c->count == 0) {
        return 1;
    }
    int64_t low = timestamp_ms < c->timestamp_min_ms ? timestamp_ms : c->timestamp_min_ms;
    int64_t high = timestamp_ms > c->timestamp_max_ms ? timestamp_ms : c->timestamp_max_ms;
    return (uint64_t)high - (uint64_t)low <= UINT32_MAX;
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

/* A key or value argument: None (length -1) or a C-contiguous bytes-like object. */
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

static PyObject *columns_append(Columns *c, PyObject *const *args, Py_ssize_t nargs) {
    if (!check_arg_count("append", nargs, 3)) {
        return NULL;
    }
    long long timestamp_ms = PyLong_AsLongLong(args[2]);
    if (timestamp_ms == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_buffer key = {0}, value = {0};
    Py_ssize_t key_length, value_length;
    if (get_blob(args[0], "key", &key, &key_length) < 0) {
        return NULL;
    }
    if (get_blob(args[1], "value", &value, &value_length) < 0) {
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

static Py_ssize_t padded_words(Py_ssize_t bytes) { return (bytes + WORD_BYTES - 1) / WORD_BYTES; }

static void put_int32_column(unsigned char *out, const int32_t *column, Py_ssize_t count) {
#if PLINTH_LITTLE_ENDIAN
    memcpy(out, column, (size_t)count * sizeof(int32_t));
#else
    for (Py_ssize_t i = 0; i < count; i++) {
        put_le32(out + 4 * i, (uint32_t)column[i]);
    }
#endif
}

/* Write a byte-list pointer at segment word `at` to a blob at segment word `target`. */
static void put_data_pointer(unsigned char *segment, Py_ssize_t at, Py_ssize_t target,
                             Py_ssize_t bytes) {
    unsigned char *p = segment + at * WORD_BYTES;
    put_le32(p, ((uint32_t)(target - at - 1) << 2) | 1u);      /* list, offset */
    put_le32(p + 4, ((uint32_t)bytes << 3) | 2u);              /* element size: byte */
}

/* The fixed part: segment table, root pointer, data section, zeroed pointers. */
static void encode_fixed_words(unsigned char *out, const Columns *c, Py_ssize_t segment_words,
                               long long producer_id, long base_sequence) {
    memset(out, 0, (size_t)WORD_BYTES * (2 + ROOT_DATA_WORDS + ROOT_POINTER_WORDS));
    put_le32(out + 4, (uint32_t)segment_words);
    unsigned char *segment = out + WORD_BYTES;
    put_le32(segment + 4, ROOT_DATA_WORDS | (ROOT_POINTER_WORDS << 16));
    unsigned char *data = segment + WORD_BYTES;
    put_le32(data, (uint32_t)c->count);
    put_le32(data + 4, (uint32_t)(int32_t)base_sequence ^ 0xFFFFFFFFu);
    put_le64(data + 8, (uint64_t)c->timestamp_min_ms);
    put_le64(data + 16, (uint64_t)c->timestamp_max_ms);
    put_le64(data + 24, (uint64_t)producer_id ^ UINT64_MAX);
}

/* The five Data blobs after the pointers, each pointed to and zero-padded. */
static void encode_blobs(unsigned char *segment, const Columns *c,
                         const Py_ssize_t blob_bytes[DATA_POINTERS]) {
    const Py_ssize_t pointers_at = 1 + ROOT_DATA_WORDS;
    Py_ssize_t target = pointers_at + ROOT_POINTER_WORDS;
    for (int i = 0; i < DATA_POINTERS; i++) {
        put_data_pointer(segment, pointers_at + i, target, blob_bytes[i]);
        unsigned char *blob = segment + target * WORD_BYTES;
        Py_ssize_t padded_bytes = padded_words(blob_bytes[i]) * WORD_BYTES;
        memset(blob + blob_bytes[i], 0, (size_t)(padded_bytes - blob_bytes[i]));
        if (i == 0) {          /* timestampDeltasMs */
            for (Py_ssize_t r = 0; r < c->count; r++) {
                put_le32(blob + 4 * r, (uint32_t)(c->timestamps_ms[r] - c->timestamp_min_ms));
            }
        } else if (i == 1 || i == 3) {
            put_int32_column(blob, i == 1 ? c->key_lengths : c->value_lengths, c->count);
        } else if (blob_bytes[i] > 0) {
            memcpy(blob, i == 2 ? c->keys : c->values, (size_t)blob_bytes[i]);
        }
        target += padded_words(blob_bytes[i]);
    }
}

static PyObject *columns_encode(Columns *c, PyObject *const *args, Py_ssize_t nargs) {
    if (!check_arg_count("encode", nargs, 2)) {
        return NULL;
    }
    long long producer_id = PyLong_AsLongLong(args[0]);
    if (producer_id == -1 && PyErr_Occurred()) {
        return NULL;
    }
    long base_sequence = PyLong_AsLong(args[1]);
    if (base_sequence == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t n = c->count;
    int64_t span_ms = c->timestamp_max_ms - c->timestamp_min_ms;
    if (n < 1 || n > UINT32_MAX / 4 || span_ms < 0 || (uint64_t)span_ms > UINT32_MAX ||
        base_sequence < INT32_MIN || base_sequence > INT32_MAX) {
        /* BatchBuilder.build checks these first, with the user-facing errors. */
        PyErr_Format(PyExc_ValueError,
                     "cannot encode %zd records spanning %lld ms with base sequence %ld",
                     n, (long long)span_ms, base_sequence);
        return NULL;
    }
    Py_ssize_t column_bytes = 4 * n;
    Py_ssize_t blob_bytes[DATA_POINTERS] = {column_bytes, column_bytes, c->keys_bytes,
                                            column_bytes, c->values_bytes};
    Py_ssize_t segment_words = 1 + ROOT_DATA_WORDS + ROOT_POINTER_WORDS;
    for (int i = 0; i < DATA_POINTERS; i++) {
        segment_words += padded_words(blob_bytes[i]);
    }
    if (segment_words > UINT32_MAX) {
        PyErr_Format(PyExc_OverflowError, "record batch of %zd words is too large", segment_words);
        return NULL;
    }
    PyObject *encoded = PyBytes_FromStringAndSize(NULL, WORD_BYTES * (1 + segment_words));
    if (encoded == NULL) {
        return NULL;
    }
    /* Written field by field, never cleared as a whole: that would touch every
     * page of a megabyte message twice. */
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(encoded);
    encode_fixed_words(out, c, segment_words, producer_id, base_sequence);
    encode_blobs(out + WORD_BYTES, c, blob_bytes);
    return encoded;
}

static PyObject *columns_clear(Columns *c, PyObject *unused) {
    c->count = 0;
    c->keys_bytes = 0;
    c->values_bytes = 0;
    c->timestamp_min_ms = 0;
    c->timestamp_max_ms = 0;
    c->accounted_bytes = 0;
    Py_RETURN_NONE;
}

static PyMethodDef columns_methods[] = {
    {"clear", (PyCFunction)columns_clear, METH_NOARGS,
     "clear(): no records, keeping the buffers for the next batch."},
    {"append", (PyCFunction)(void (*)(void))columns_append, METH_FASTCALL,
     "append(key, value, timestamp_ms) -> index: one record; key and value bytes-like or None."},
    {"encode", (PyCFunction)(void (*)(void))columns_encode, METH_FASTCALL,
     "encode(producer_id, base_sequence) -> bytes: the records as a RecordBatch, no headers."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef columns_members[] = {
    {"record_count", T_PYSSIZET, offsetof(Columns, count), READONLY, "records appended"},
    {"accounted_bytes", T_PYSSIZET, offsetof(Columns, accounted_bytes), READONLY,
     "sum of RECORD_OVERHEAD_BYTES + key and value lengths over the records"},
    {"keys_bytes", T_PYSSIZET, offsetof(Columns, keys_bytes), READONLY, "size of the keys blob"},
    {"values_bytes", T_PYSSIZET, offsetof(Columns, values_bytes), READONLY,
     "size of the values blob"},
    {"timestamp_min_ms", T_LONGLONG, offsetof(Columns, timestamp_min_ms), READONLY,
     "smallest timestamp (0 when empty)"},
    {"timestamp_max_ms", T_LONGLONG, offsetof(Columns, timestamp_max_ms), READONLY,
     "largest timestamp (0 when empty)"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject ColumnsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "plinth.client._producer.RecordColumns",
    .tp_doc = "The records of one batch, column by column. Not thread-safe on its own.",
    .tp_basicsize = sizeof(Columns),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = columns_new,
    .tp_dealloc = (destructor)columns_dealloc,
    .tp_methods = columns_methods,
    .tp_members = columns_members,
};

/* ---- FutureBase ------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *batch;       /* the BatchResult */
    Py_ssize_t index;      /* the record's index in the batch */
} FutureBase;

static PyObject *future_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"batch", "index", NULL};
    PyObject *batch;
    Py_ssize_t index;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "On", names, &batch, &index)) {
        return NULL;
    }
    FutureBase *f = (FutureBase *)type->tp_alloc(type, 0);
    if (f != NULL) {
        Py_INCREF(batch);
        f->batch = batch;
        f->index = index;
    }
    return (PyObject *)f;
}

static int future_traverse(FutureBase *f, visitproc visit, void *arg) {
    Py_VISIT(f->batch);
    return 0;
}

static int future_clear(FutureBase *f) {
    Py_CLEAR(f->batch);
    return 0;
}

static void future_dealloc(FutureBase *f) {
    PyObject_GC_UnTrack(f);
    future_clear(f);
    Py_TYPE(f)->tp_free((PyObject *)f);
}

static PyMemberDef future_members[] = {
    {"batch", T_OBJECT, offsetof(FutureBase, batch), READONLY,
     "The BatchResult shared by every record of this record's batch."},
    {"_index", T_PYSSIZET, offsetof(FutureBase, index), READONLY,
     "The record's index in its batch."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject FutureBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "plinth.client._producer.FutureBase",
    .tp_doc = "FutureBase(batch, index): the storage of RecordFuture.",
    .tp_basicsize = sizeof(FutureBase),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = future_new,
    .tp_dealloc = (destructor)future_dealloc,
    .tp_traverse = (traverseproc)future_traverse,
    .tp_clear = (inquiry)future_clear,
    .tp_members = future_members,
};

/* ---- Appender ---------------------------------------------------------------- */

typedef struct {
    Columns *columns;      /* NULL: no open batch */
    PyObject *result;      /* its BatchResult */
} Slot;

typedef struct {
    Py_ssize_t partition_count;
    Py_ssize_t sticky;     /* the partition of keyless records */
    Slot slots[];          /* one per partition */
} TopicSlots;

typedef struct {
    PyObject_HEAD
    PyObject *topics;                  /* dict: topic str -> capsule of TopicSlots */
    PyTypeObject *future_type;
    long long batch_bytes_max, buffer_bytes_max, record_bytes_max;
    long long buffered_bytes;          /* accounted bytes of records not yet released */
    int closed;
} Appender;

static void slot_clear(Slot *slot) {
    Py_CLEAR(slot->columns);
    Py_CLEAR(slot->result);
}

static void topic_slots_free(PyObject *capsule) {
    TopicSlots *t = PyCapsule_GetPointer(capsule, NULL);
    for (Py_ssize_t p = 0; p < t->partition_count; p++) {
        slot_clear(&t->slots[p]);
    }
    PyMem_Free(t);
}

static int appender_init(Appender *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"future_type", "batch_bytes_max", "buffer_bytes_max",
                            "record_bytes_max", NULL};
    PyObject *future_type;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$OLLL", names, &future_type,
                                     &self->batch_bytes_max, &self->buffer_bytes_max,
                                     &self->record_bytes_max)) {
        return -1;
    }
    if (!PyType_Check(future_type) ||
        !PyType_IsSubtype((PyTypeObject *)future_type, &FutureBaseType)) {
        PyErr_SetString(PyExc_TypeError, "future_type must be a subclass of FutureBase");
        return -1;
    }
    Py_INCREF(future_type);
    Py_XSETREF(self->future_type, (PyTypeObject *)future_type);
    Py_XSETREF(self->topics, PyDict_New());
    return self->topics == NULL ? -1 : 0;
}

static void appender_dealloc(Appender *self) {
    Py_XDECREF(self->topics);
    Py_XDECREF(self->future_type);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static TopicSlots *topic_slots(Appender *self, PyObject *topic) {
    PyObject *capsule = PyDict_GetItemWithError(self->topics, topic);
    if (capsule == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_KeyError, "topic %R is not registered", topic);
        }
        return NULL;
    }
    return PyCapsule_GetPointer(capsule, NULL);
}

static Slot *slot_of(Appender *self, PyObject *topic, PyObject *partition) {
    TopicSlots *t = topic_slots(self, topic);
    if (t == NULL) {
        return NULL;
    }
    Py_ssize_t p = PyLong_AsSsize_t(partition);
    if (p == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (p < 0 || p >= t->partition_count) {
        PyErr_Format(PyExc_IndexError, "partition %zd of %R is not in 0..%zd", p, topic,
                     t->partition_count - 1);
        return NULL;
    }
    return &t->slots[p];
}

static int64_t now_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);   /* the clock of time.time_ns() */
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* The length of a plain key or value (-1 for None) in *length; 0 if it is not
 * None or exact bytes. */
static int plain_blob_length(PyObject *obj, Py_ssize_t *length) {
    if (obj == Py_None) {
        *length = NULL_LENGTH;
        return 1;
    }
    if (!PyBytes_CheckExact(obj)) {
        return 0;
    }
    *length = PyBytes_GET_SIZE(obj);
    return 1;
}

/* A plain timestamp (None: now, or an exact int64) in *timestamp_ms; 0 if not. */
static int plain_timestamp(PyObject *obj, int64_t *timestamp_ms) {
    if (obj == Py_None) {
        *timestamp_ms = now_ms();
        return 1;
    }
    int overflow = 0;
    if (!PyLong_CheckExact(obj)) {
        return 0;
    }
    *timestamp_ms = PyLong_AsLongLongAndOverflow(obj, &overflow);
    return !overflow;
}

/* The record's slot: explicit partition, murmur2 of the key, or the sticky one.
 * NULL to decline (an error set only if the topic lookup failed). */
static Slot *record_slot(Appender *self, PyObject *topic, PyObject *key, Py_ssize_t key_length,
                         PyObject *partition) {
    PyObject *capsule = PyDict_GetItemWithError(self->topics, topic);
    if (capsule == NULL) {
        return NULL;
    }
    TopicSlots *t = PyCapsule_GetPointer(capsule, NULL);
    Py_ssize_t p;
    if (partition != Py_None) {
        int overflow = 0;
        if (!PyLong_CheckExact(partition)) {
            return NULL;
        }
        long long asked = PyLong_AsLongLongAndOverflow(partition, &overflow);
        if (overflow || asked < 0 || asked >= t->partition_count) {
            return NULL;   /* the slow path raises the right error */
        }
        p = (Py_ssize_t)asked;
    } else if (key != Py_None) {
        uint32_t hash = (uint32_t)kafka_murmur2((const unsigned char *)PyBytes_AS_STRING(key),
                                                key_length);
        p = (Py_ssize_t)((hash & 0x7FFFFFFFu) % (uint32_t)t->partition_count);
    } else {
        p = t->sticky;
    }
    return &t->slots[p];
}

/* Whether the slot's open batch, and the buffer, take a record of `size`
 * accounted bytes without filling up. */
static int slot_has_room(Appender *self, const Slot *slot, long long size, int64_t timestamp_ms) {
    return slot->columns != NULL && size <= self->record_bytes_max &&
           (self->buffered_bytes == 0 || self->buffered_bytes + size <= self->buffer_bytes_max) &&
           slot->columns->accounted_bytes + size < self->batch_bytes_max &&
           columns_span_fits(slot->columns, timestamp_ms);
}

/* The fast path; see the top of the file. A future, None to decline (nothing
 * changed), or NULL with an error set. */
static PyObject *append_record(Appender *self, PyObject *topic, PyObject *value, PyObject *key,
                               PyObject *partition, PyObject *timestamp) {
    Py_ssize_t key_length, value_length;
    int64_t timestamp_ms;
    if (self->closed || !PyUnicode_CheckExact(topic) || !plain_blob_length(key, &key_length) ||
        !plain_blob_length(value, &value_length) || !plain_timestamp(timestamp, &timestamp_ms)) {
        Py_RETURN_NONE;
    }
    /* The one call here that can run Python code, and so let other threads in:
     * allocating a GC-tracked object may start a collection. So it comes before
     * any state is read. */
    FutureBase *future = (FutureBase *)self->future_type->tp_alloc(self->future_type, 0);
    if (future == NULL) {
        return NULL;
    }
    Slot *slot = record_slot(self, topic, key, key_length, partition);
    long long size = RECORD_OVERHEAD_BYTES + (key_length > 0 ? key_length : 0) +
                     (value_length > 0 ? value_length : 0);
    if (slot == NULL || !slot_has_room(self, slot, size, timestamp_ms)) {
        Py_DECREF(future);
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    if (columns_reserve(slot->columns, key_length, value_length) < 0) {
        Py_DECREF(future);
        return NULL;
    }
    /* From here on nothing can fail. */
    future->index = columns_commit(slot->columns,
                                   key_length > 0 ? PyBytes_AS_STRING(key) : NULL, key_length,
                                   value_length > 0 ? PyBytes_AS_STRING(value) : NULL,
                                   value_length, timestamp_ms);
    self->buffered_bytes += size;
    Py_INCREF(slot->result);
    future->batch = slot->result;
    return (PyObject *)future;
}

static PyObject *appender_append(Appender *self, PyObject *const *args, Py_ssize_t nargs) {
    if (!check_arg_count("append", nargs, 5)) {
        return NULL;
    }
    return append_record(self, args[0], args[1], args[2], args[3], args[4]);
}

static PyObject *appender_add_topic(Appender *self, PyObject *args) {
    PyObject *topic;
    Py_ssize_t partition_count, sticky;
    if (!PyArg_ParseTuple(args, "Unn:add_topic", &topic, &partition_count, &sticky)) {
        return NULL;
    }
    if (!PyUnicode_CheckExact(topic)) {
        /* A str subclass could run Python code when append() looks it up. */
        PyErr_SetString(PyExc_TypeError, "topic must be a str, not a subclass");
        return NULL;
    }
    if (partition_count < 1 || partition_count > (1 << 20) || sticky < 0 ||
        sticky >= partition_count) {
        PyErr_Format(PyExc_ValueError, "partition_count %zd (sticky %zd) out of range",
                     partition_count, sticky);
        return NULL;
    }
    int known = PyDict_Contains(self->topics, topic);
    if (known != 0) {
        return known < 0 ? NULL : Py_NewRef(Py_None);   /* registered once */
    }
    TopicSlots *t = PyMem_Calloc(1, sizeof(TopicSlots) + (size_t)partition_count * sizeof(Slot));
    if (t == NULL) {
        return PyErr_NoMemory();
    }
    t->partition_count = partition_count;
    t->sticky = sticky;
    PyObject *capsule = PyCapsule_New(t, NULL, topic_slots_free);
    if (capsule == NULL) {
        PyMem_Free(t);
        return NULL;
    }
    int failed = PyDict_SetItem(self->topics, topic, capsule);
    Py_DECREF(capsule);
    return failed ? NULL : Py_NewRef(Py_None);
}

static PyObject *appender_set_sticky(Appender *self, PyObject *args) {
    PyObject *topic;
    Py_ssize_t sticky;
    if (!PyArg_ParseTuple(args, "Un:set_sticky", &topic, &sticky)) {
        return NULL;
    }
    TopicSlots *t = topic_slots(self, topic);
    if (t == NULL) {
        return NULL;
    }
    if (sticky < 0 || sticky >= t->partition_count) {
        PyErr_Format(PyExc_IndexError, "sticky partition %zd out of range", sticky);
        return NULL;
    }
    t->sticky = sticky;
    Py_RETURN_NONE;
}

static PyObject *appender_open_batch(Appender *self, PyObject *args) {
    PyObject *topic, *partition, *columns, *result;
    if (!PyArg_ParseTuple(args, "UOO!O:open_batch", &topic, &partition, &ColumnsType, &columns,
                          &result)) {
        return NULL;
    }
    Slot *slot = slot_of(self, topic, partition);
    if (slot == NULL) {
        return NULL;
    }
    if (slot->columns != NULL) {
        PyErr_Format(PyExc_RuntimeError, "%R partition %S already has an open batch", topic,
                     partition);
        return NULL;
    }
    Py_INCREF(columns);
    Py_INCREF(result);
    slot->columns = (Columns *)columns;
    slot->result = result;
    Py_RETURN_NONE;
}

static PyObject *appender_close_batch(Appender *self, PyObject *args) {
    PyObject *topic, *partition;
    if (!PyArg_ParseTuple(args, "UO:close_batch", &topic, &partition)) {
        return NULL;
    }
    Slot *slot = slot_of(self, topic, partition);
    if (slot == NULL) {
        return NULL;
    }
    /* Detach first, then release: the decrefs may run Python code. */
    Slot detached = *slot;
    slot->columns = NULL;
    slot->result = NULL;
    slot_clear(&detached);
    Py_RETURN_NONE;
}

static PyObject *appender_reserve(Appender *self, PyObject *arg) {
    long long bytes = PyLong_AsLongLong(arg);
    if (bytes == -1 && PyErr_Occurred()) {
        return NULL;
    }
    self->buffered_bytes += bytes;
    Py_RETURN_NONE;
}

static PyObject *appender_release(Appender *self, PyObject *arg) {
    long long bytes = PyLong_AsLongLong(arg);
    if (bytes == -1 && PyErr_Occurred()) {
        return NULL;
    }
    self->buffered_bytes -= bytes;
    Py_RETURN_NONE;
}

static PyObject *appender_close(Appender *self, PyObject *unused) {
    self->closed = 1;
    Py_RETURN_NONE;
}

static PyMethodDef appender_methods[] = {
    {"append", (PyCFunction)(void (*)(void))appender_append, METH_FASTCALL,
     "append(topic, value, key, partition, timestamp_ms) -> RecordFuture, or None for the "
     "slow path (nothing changed)."},
    {"add_topic", (PyCFunction)appender_add_topic, METH_VARARGS,
     "add_topic(topic, partition_count, sticky_partition): once per topic."},
    {"set_sticky", (PyCFunction)appender_set_sticky, METH_VARARGS,
     "set_sticky(topic, partition): where keyless records of the topic go."},
    {"open_batch", (PyCFunction)appender_open_batch, METH_VARARGS,
     "open_batch(topic, partition, columns, result): the partition's batch to append to."},
    {"close_batch", (PyCFunction)appender_close_batch, METH_VARARGS,
     "close_batch(topic, partition): no more appends to the partition's batch."},
    {"reserve", (PyCFunction)appender_reserve, METH_O, "reserve(bytes): count buffered bytes."},
    {"release", (PyCFunction)appender_release, METH_O, "release(bytes): uncount them."},
    {"close", (PyCFunction)appender_close, METH_NOARGS,
     "close(): append() returns None from now on."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef appender_members[] = {
    {"buffered_bytes", T_LONGLONG, offsetof(Appender, buffered_bytes), READONLY,
     "accounted bytes reserved and not yet released"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject AppenderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "plinth.client._producer.Appender",
    .tp_doc = "Appender(*, future_type, batch_bytes_max, buffer_bytes_max, record_bytes_max): "
              "the open batches and the per-record fast path. Any thread (GIL held).",
    .tp_basicsize = sizeof(Appender),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)appender_init,
    .tp_dealloc = (destructor)appender_dealloc,
    .tp_methods = appender_methods,
    .tp_members = appender_members,
};

/* ---- ProducerBase ------------------------------------------------------------------ */

/* Producer.send: the arguments of the common call, send(topic, value, key=...,
 * partition=..., timestamp_ms=...), parsed here and handed to append_record in
 * one C call; any other call, or a record append_record declines, goes to the
 * Python method Producer._send with the very same arguments, which is the
 * reference for what send does. */
typedef struct {
    PyObject_HEAD
    Appender *appender;    /* NULL: every call goes to _send (serializers are set) */
} ProducerBase;

static PyObject *str_send_python, *str_value, *str_key, *str_partition, *str_timestamp_ms;

static int same_name(PyObject *name, PyObject *interned) {
    return name == interned || PyUnicode_Compare(name, interned) == 0;
}

static PyObject *send_python(PyObject *self, PyObject *const *args, size_t nargsf,
                             PyObject *kwnames) {
    PyObject *method = PyObject_GetAttr(self, str_send_python);
    if (method == NULL) {
        return NULL;
    }
    PyObject *result = PyObject_Vectorcall(method, args, nargsf, kwnames);
    Py_DECREF(method);
    return result;
}

static PyObject *producer_send(ProducerBase *self, PyObject *const *args, size_t nargsf,
                               PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (self->appender == NULL || nargs < 1 || nargs > 2) {
        return send_python((PyObject *)self, args, nargsf, kwnames);
    }
    PyObject *value = nargs == 2 ? args[1] : Py_None, *key = Py_None, *partition = Py_None,
             *timestamp = Py_None;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i), *arg = args[nargs + i];
        if (same_name(name, str_key)) {
            key = arg;
        } else if (same_name(name, str_partition)) {
            partition = arg;
        } else if (same_name(name, str_timestamp_ms)) {
            timestamp = arg;
        } else if (nargs == 1 && same_name(name, str_value)) {
            value = arg;
        } else {   /* headers, or a mistake _send reports */
            return send_python((PyObject *)self, args, nargsf, kwnames);
        }
    }
    PyObject *future = append_record(self->appender, args[0], value, key, partition, timestamp);
    if (future != Py_None) {
        return future;   /* or NULL: an error */
    }
    Py_DECREF(future);
    return send_python((PyObject *)self, args, nargsf, kwnames);
}

static PyObject *producer_set_fast_path(ProducerBase *self, PyObject *appender) {
    if (appender != Py_None && !PyObject_TypeCheck(appender, &AppenderType)) {
        PyErr_SetString(PyExc_TypeError, "_set_fast_path takes an Appender or None");
        return NULL;
    }
    Py_XSETREF(self->appender, appender == Py_None ? NULL : (Appender *)Py_NewRef(appender));
    Py_RETURN_NONE;
}

static int producer_traverse(ProducerBase *self, visitproc visit, void *arg) {
    Py_VISIT(self->appender);
    return 0;
}

static int producer_clear(ProducerBase *self) {
    Py_CLEAR(self->appender);
    return 0;
}

static void producer_dealloc(ProducerBase *self) {
    PyObject_GC_UnTrack(self);
    producer_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef producer_methods[] = {
    {"send", (PyCFunction)(void (*)(void))producer_send, METH_FASTCALL | METH_KEYWORDS,
     "send($self, topic, value=None, *, key=None, partition=None, headers=None, "
     "timestamp_ms=None)\n--\n\n"
     "Queue one record; returns a future for its RecordMetadata. Any thread.\n\n"
     "The per-record hot path, in C for the common call; see Producer._send."},
    {"_set_fast_path", (PyCFunction)producer_set_fast_path, METH_O,
     "_set_fast_path(appender or None): where send() appends without calling _send."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ProducerBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "plinth.client._producer.ProducerBase",
    .tp_doc = "The base of Producer: send() for the common call.",
    .tp_basicsize = sizeof(ProducerBase),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)producer_dealloc,
    .tp_traverse = (traverseproc)producer_traverse,
    .tp_clear = (inquiry)producer_clear,
    .tp_methods = producer_methods,
};

/* ---- Module ------------------------------------------------------------------------ */

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "plinth.client._producer",
    "The producer's per-record path: record columns, futures, the fast append.", -1, NULL,
};

PyMODINIT_FUNC PyInit__producer(void) {
    PyTypeObject *types[] = {&ColumnsType, &FutureBaseType, &AppenderType, &ProducerBaseType};
    const char *names[] = {"RecordColumns", "FutureBase", "Appender", "ProducerBase"};
    PyObject **strings[] = {&str_send_python, &str_value, &str_key, &str_partition,
                            &str_timestamp_ms};
    const char *texts[] = {"_send", "value", "key", "partition", "timestamp_ms"};
    for (int i = 0; i < 5; i++) {
        if ((*strings[i] = PyUnicode_InternFromString(texts[i])) == NULL) {
            return NULL;
        }
    }
    for (int i = 0; i < 4; i++) {
        if (PyType_Ready(types[i]) < 0) {
            return NULL;
        }
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    for (int i = 0; i < 4; i++) {
        if (PyModule_AddObjectRef(m, names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    if (PyModule_AddIntConstant(m, "RECORD_OVERHEAD_BYTES", RECORD_OVERHEAD_BYTES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
