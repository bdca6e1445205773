/* ConsumerRecord as a C type, and the loop that builds one per record of a
 * RecordBatch whose columns format/record_batch.py has read and checked.
 *
 * Why C: building a record in Python (a __slots__ class, an int per offset
 * and timestamp, an empty headers list, a slice per key and value) cost about
 * 0.55 us per record, the whole of the consumer's decode time. Here it is two
 * bytes slices and one small object.
 *
 * The columns are the RecordBatch's Data fields (schemas/record_batch.capnp):
 *
 *   timestamp_deltas_ms  record_count x UInt32 LE   timestamp - base_timestamp_ms
 *   key_lengths          record_count x Int32 LE    -1 = null key
 *   keys                 the non-null keys, concatenated in record order
 *   value_lengths        record_count x Int32 LE    -1 = null value
 *   values               the non-null values, concatenated in record order
 *
 * The caller has checked them (_check_columns), but the bytes came from the
 * network, so every rule this code relies on is checked again here, before any
 * record is built: a broken column raises ValueError and never reads outside
 * its buffer.
 *
 * A ConsumerRecord keeps offset and timestamp_ms as C integers and creates its
 * headers list on first access, so a record without headers costs no int or
 * list objects until someone reads them. It is created untracked by the
 * cyclic GC (it then holds only bytes, str, int or None, which cannot form a
 * cycle) and is tracked as soon as it holds anything else: a headers list, or
 * a key or value a deserializer replaced with a container. So hundreds of
 * thousands of fetched records add nothing to the collector's work.
 *
 * Any thread holding the GIL may call into this module.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#define COLUMN_ENTRY_BYTES 4
#define NULL_LENGTH (-1)

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

static PyTypeObject RecordType;

/* --- Reading the little-endian columns --------------------------------------- */

static uint32_t read_u32_le(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static int32_t read_i32_le(const unsigned char *p) {
    return (int32_t)read_u32_le(p);
}

/* --- GC tracking: only once a record can be part of a cycle ------------------- */

static int is_atomic(PyObject *o) {
    return o == Py_None || PyBytes_CheckExact(o) || PyUnicode_CheckExact(o) ||
           PyLong_CheckExact(o) || PyFloat_CheckExact(o);
}

static void track_if_container(Record *r, PyObject *o) {
    if (!is_atomic(o) && !PyObject_GC_IsTracked((PyObject *)r)) {
        PyObject_GC_Track((PyObject *)r);
    }
}

/* --- The record type ------------------------------------------------------------ */

static Record *record_alloc(void) {
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
     "list of (str, bytes), in the order the producer gave them", NULL},
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

static PyTypeObject RecordType = {
    PyVarObject_HEAD_INIT(NULL, 0)
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

/* --- Building the records of a batch ------------------------------------------- */

typedef struct {
    const unsigned char *lengths;   /* record_count Int32 LE */
    const unsigned char *blob;
    Py_ssize_t blob_bytes;
    Py_ssize_t position;            /* where the next non-null entry starts in blob */
} BlobCursor;

/* Every length >= -1, and the non-null ones adding up to exactly the blob's size;
 * sets cursor->position to where record `first` starts. 0, or -1 with ValueError. */
static int check_blob(const char *what, BlobCursor *cursor, Py_ssize_t record_count,
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
    if (position != cursor->blob_bytes) {
        PyErr_Format(PyExc_ValueError, "%s lengths sum to %zd bytes but the %ss are %zd bytes",
                     what, position, what, cursor->blob_bytes);
        return -1;
    }
    if (first == record_count) {
        cursor->position = position;
    }
    return 0;
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

typedef struct {
    PyObject *topic;
    PyObject *partition;
    long long base_offset;
    long long base_timestamp_ms;
    Py_ssize_t first;
    Py_ssize_t record_count;
    Py_buffer deltas, key_lengths, keys, value_lengths, values;
} BatchColumns;

static int check_columns(BatchColumns *c) {
    Py_ssize_t column_bytes = c->deltas.len;
    if (column_bytes % COLUMN_ENTRY_BYTES != 0 || c->key_lengths.len != column_bytes ||
        c->value_lengths.len != column_bytes) {
        PyErr_Format(PyExc_ValueError,
                     "columns of %zd (deltas), %zd (key lengths) and %zd (value lengths) "
                     "bytes: must be equal multiples of 4",
                     c->deltas.len, c->key_lengths.len, c->value_lengths.len);
        return -1;
    }
    c->record_count = column_bytes / COLUMN_ENTRY_BYTES;
    if (c->first < 0 || c->first > c->record_count) {
        PyErr_Format(PyExc_ValueError, "first record %zd is outside 0..%zd", c->first,
                     c->record_count);
        return -1;
    }
    if (c->base_offset < 0 || c->base_offset > LLONG_MAX - c->record_count) {
        PyErr_Format(PyExc_ValueError, "base offset %lld with %zd records overflows Int64",
                     c->base_offset, c->record_count);
        return -1;
    }
    if (c->base_timestamp_ms > LLONG_MAX - (long long)UINT32_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "base timestamp %lld ms plus a UInt32 delta overflows Int64",
                     c->base_timestamp_ms);
        return -1;
    }
    return 0;
}

static Record *build_one(BatchColumns *c, BlobCursor *keys, BlobCursor *values,
                         Py_ssize_t i) {
    Record *r = record_alloc();
    if (r == NULL) {
        return NULL;
    }
    r->topic = Py_NewRef(c->topic);
    r->partition = Py_NewRef(c->partition);
    r->offset = c->base_offset + i;
    r->timestamp_ms = c->base_timestamp_ms +
                      (long long)read_u32_le((const unsigned char *)c->deltas.buf +
                                             COLUMN_ENTRY_BYTES * i);
    r->key = next_slice(keys, i);
    r->value = r->key != NULL ? next_slice(values, i) : NULL;
    if (r->value == NULL) {
        Py_DECREF(r);
        return NULL;
    }
    return r;
}

static PyObject *build_list(BatchColumns *c) {
    BlobCursor keys = {c->key_lengths.buf, c->keys.buf, c->keys.len, 0};
    BlobCursor values = {c->value_lengths.buf, c->values.buf, c->values.len, 0};
    if (check_columns(c) < 0 || check_blob("key", &keys, c->record_count, c->first) < 0 ||
        check_blob("value", &values, c->record_count, c->first) < 0) {
        return NULL;
    }
    PyObject *records = PyList_New(c->record_count - c->first);
    if (records == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = c->first; i < c->record_count; i++) {
        Record *r = build_one(c, &keys, &values, i);
        if (r == NULL) {
            Py_DECREF(records);   /* the unset items are NULL, which list_dealloc skips */
            return NULL;
        }
        PyList_SET_ITEM(records, i - c->first, (PyObject *)r);
    }
    return records;
}

static PyObject *build_records(PyObject *self, PyObject *args) {
    BatchColumns c;
    if (!PyArg_ParseTuple(args, "OOLnLy*y*y*y*y*:build_records", &c.topic, &c.partition,
                          &c.base_offset, &c.first, &c.base_timestamp_ms, &c.deltas,
                          &c.key_lengths, &c.keys, &c.value_lengths, &c.values)) {
        return NULL;   /* y* releases what it had acquired */
    }
    PyObject *records = build_list(&c);
    PyBuffer_Release(&c.deltas);
    PyBuffer_Release(&c.key_lengths);
    PyBuffer_Release(&c.keys);
    PyBuffer_Release(&c.value_lengths);
    PyBuffer_Release(&c.values);
    return records;
}

static PyMethodDef methods[] = {
    {"build_records", build_records, METH_VARARGS,
     "build_records(topic, partition, base_offset, first, base_timestamp_ms,\n"
     "              timestamp_deltas_ms, key_lengths, keys, value_lengths, values)\n"
     "-> list of ConsumerRecord, for records first .. record_count - 1 of the batch.\n"
     "Raises ValueError if the columns break a rule of the schema."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "plinth.format._consumer_records",
    "ConsumerRecord, and building one per record of a checked RecordBatch.", -1, methods,
};

PyMODINIT_FUNC PyInit__consumer_records(void) {
    if (PyType_Ready(&RecordType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddType(m, &RecordType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
