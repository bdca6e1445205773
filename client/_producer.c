/* The producer's per-record path in C: record futures, the open batches and the
 * one function that decides where a record goes. Imported by client/futures.py,
 * client/accumulator.py and client/producer.py; required (setup.py builds it).
 *
 * FutureBase      the storage of RecordFuture (client/futures.py): the batch's
 *                 BatchResult and the record's index.
 * Appender        the open batch of each topic and partition (its RecordColumns,
 *                 BatchResult and accounted bytes), the buffer's accounted bytes,
 *                 and place_record(): which partition (explicit, Kafka's murmur2
 *                 of the key, or the topic's sticky partition), and whether the
 *                 record fits (record_bytes_max, buffer_memory, batch_bytes_max,
 *                 records per batch, the UInt32 timestamp span). Both paths ask it:
 *                 append() (the fast path) takes a record only when it fits an open
 *                 batch that stays open, and returns None, changing nothing,
 *                 otherwise; add() (the accumulator's slow path) returns the
 *                 verdict, and appends when the record fits.
 * ProducerBase    the base of Producer: send() parses the common call and
 *                 appends with the Appender in one C call; anything else goes
 *                 to Producer._send, in Python, with the same arguments.
 *
 * Accounting. A record counts as the bytes it adds to its encoded batch: its key,
 * value and headers, and RECORD_OVERHEAD_BYTES (format/record_batch_layout.h).
 * commit_record() adds them to the batch and to the buffer, the one place that
 * does; close_batch() returns the batch's count, and release() gives it back to
 * the buffer when the batch is acknowledged or failed.
 *
 * The records themselves go into RecordColumns, which plinth.format._record_batch
 * owns (it also encodes them); this extension reaches its C functions through the
 * PyCapsule declared in format/record_columns_api.h.
 *
 * Threads and the GIL. Every function here keeps the GIL and, from the moment it
 * reads shared state to its last change of it, calls nothing that can run Python
 * code or release the GIL (no Python callbacks; the future, a GC-tracked object
 * whose allocation may start a collection, is allocated before), so each call is
 * atomic with respect to other Python threads. The accumulator relies on that:
 * append() takes no lock, and add() decides and appends in one call. Keeping the
 * GIL is also the fast choice: releasing it per call would make each send wait
 * for the sender thread.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "record_columns_api.h"
#include "kafka_murmur2.h"

typedef RecordColumnsObject Columns;

static int check_arg_count(const char *name, Py_ssize_t nargs, Py_ssize_t expected) {
    if (nargs != expected) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd positional arguments (%zd given)", name,
                     expected, nargs);
        return 0;
    }
    return 1;
}

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
    Columns *columns;              /* NULL: no open batch */
    PyObject *result;              /* its BatchResult */
    long long accounted_bytes;     /* what its records count (see the top of the file) */
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
    long long batch_bytes_max, buffer_bytes_max, record_bytes_max, records_max;
    Py_ssize_t partitions_max;         /* per topic */
    long long buffered_bytes;          /* accounted bytes of records not yet released */
    int closed;
} Appender;

/* What place_record answers. The first two append; the others do not. */
enum {
    FITS,                  /* the open batch takes the record and stays open */
    FITS_AND_FILLS,        /* it takes it and is full: seal it after */
    NO_OPEN_BATCH,         /* open a batch on the partition first */
    BATCH_FULL,            /* seal the open batch first: the record does not fit it */
    BUFFER_FULL,           /* wait for acknowledgements to free buffer_memory */
    TOO_LARGE,             /* over record_bytes_max: refuse */
    NO_SUCH_PARTITION,     /* an explicit partition the topic does not have: refuse */
    VERDICTS
};
static const char *const VERDICT_NAMES[VERDICTS] = {
    "FITS", "FITS_AND_FILLS", "NO_OPEN_BATCH", "BATCH_FULL", "BUFFER_FULL", "TOO_LARGE",
    "NO_SUCH_PARTITION",
};

typedef struct {
    int verdict;
    Py_ssize_t partition;          /* -1 with NO_SUCH_PARTITION */
    long long record_bytes;        /* what the record counts */
} Placement;

/* A record as place_record sees it: plain values only. */
typedef struct {
    const char *key;               /* NULL: null key */
    Py_ssize_t key_length;         /* NULL_LENGTH: null */
    const char *value;
    Py_ssize_t value_length;
    long long headers_bytes;       /* their estimated encoding (format/record_batch.py) */
    int has_partition;
    long long partition;           /* if has_partition; -1 if it did not fit a long long */
    int64_t timestamp_ms;
} Record;

static long long record_bytes(const Record *r) {
    return RECORD_OVERHEAD_BYTES + (r->key_length > 0 ? r->key_length : 0) +
           (r->value_length > 0 ? r->value_length : 0) + r->headers_bytes;
}

/* Whether buffer_memory takes `size` more bytes; an empty buffer takes any record. */
static int buffer_has_room(const Appender *self, long long size) {
    return self->buffered_bytes == 0 || self->buffered_bytes + size <= self->buffer_bytes_max;
}

/* Explicit partition, Kafka's murmur2 of the key, or the topic's sticky partition;
 * -1 for an explicit partition the topic does not have. */
static Py_ssize_t choose_partition(const TopicSlots *t, const Record *r) {
    if (r->has_partition) {
        return r->partition >= 0 && r->partition < t->partition_count ? (Py_ssize_t)r->partition
                                                                     : -1;
    }
    if (r->key != NULL) {
        uint32_t hash = (uint32_t)kafka_murmur2((const unsigned char *)r->key, r->key_length);
        return (Py_ssize_t)((hash & 0x7FFFFFFFu) % (uint32_t)t->partition_count);
    }
    return t->sticky;
}

/* Whether the slot's open batch takes a record of `size` bytes at timestamp_ms. An
 * empty batch takes any record (place_record has checked record_bytes_max). */
static int batch_verdict(const Appender *self, const Slot *slot, long long size,
                         int64_t timestamp_ms) {
    if (slot->columns == NULL) {
        return NO_OPEN_BATCH;
    }
    long long count = slot->columns->count;
    long long bytes = slot->accounted_bytes + size;
    if (count > 0 && (bytes > self->batch_bytes_max ||
                      !record_columns_span_fits(slot->columns, timestamp_ms))) {
        return BATCH_FULL;
    }
    /* Full with this record: by its bytes, or at records_max records (never more:
     * a full batch is sealed at once). */
    return bytes >= self->batch_bytes_max || count + 1 >= self->records_max ? FITS_AND_FILLS
                                                                            : FITS;
}

/* Which partition, and does the record fit: the one place that decides, for both
 * paths. Changes nothing. */
static Placement place_record(const Appender *self, const TopicSlots *t, const Record *r) {
    Placement p = {NO_SUCH_PARTITION, choose_partition(t, r), record_bytes(r)};
    if (p.partition < 0) {
        return p;
    }
    if (p.record_bytes > self->record_bytes_max) {
        p.verdict = TOO_LARGE;
    } else if (!buffer_has_room(self, p.record_bytes)) {
        p.verdict = BUFFER_FULL;
    } else {
        p.verdict = batch_verdict(self, &t->slots[p.partition], p.record_bytes, r->timestamp_ms);
    }
    return p;
}

/* Append the record to the slot's open batch and count it, in the batch and in
 * the buffer: the one place records are counted. Its index, or -1 with an error
 * (no memory for the columns), nothing changed. */
static Py_ssize_t commit_record(Appender *self, Slot *slot, const Record *r, long long size) {
    if (RecordColumns_API->reserve(slot->columns, r->key_length, r->value_length) < 0) {
        return -1;
    }
    Py_ssize_t index = RecordColumns_API->commit(slot->columns, r->key, r->key_length, r->value,
                                                 r->value_length, r->timestamp_ms);
    slot->accounted_bytes += size;
    self->buffered_bytes += size;
    return index;
}

static void slot_clear(Slot *slot) {
    Py_CLEAR(slot->columns);
    Py_CLEAR(slot->result);
    slot->accounted_bytes = 0;
}

/* Detach the slot's batch (its references move to *detached); its accounted bytes. */
static long long slot_detach(Slot *slot, Slot *detached) {
    *detached = *slot;
    slot->columns = NULL;
    slot->result = NULL;
    slot->accounted_bytes = 0;
    return detached->accounted_bytes;
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
                            "record_bytes_max", "records_max", "partitions_max", NULL};
    PyObject *future_type;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$OLLLLn", names, &future_type,
                                     &self->batch_bytes_max, &self->buffer_bytes_max,
                                     &self->record_bytes_max, &self->records_max,
                                     &self->partitions_max)) {
        return -1;
    }
    if (!PyType_Check(future_type) ||
        !PyType_IsSubtype((PyTypeObject *)future_type, &FutureBaseType)) {
        PyErr_SetString(PyExc_TypeError, "future_type must be a subclass of FutureBase");
        return -1;
    }
    if (self->batch_bytes_max < 1 || self->buffer_bytes_max < 1 || self->record_bytes_max < 1 ||
        self->records_max < 1 || self->partitions_max < 1) {
        PyErr_SetString(PyExc_ValueError, "Appender limits must be >= 1");
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

/* The topic's slots; NULL with KeyError if it was not added (or another error). */
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

/* A key or value: None or exact bytes into *data and *length; 0 if it is neither. */
static int plain_blob(PyObject *obj, const char **data, Py_ssize_t *length) {
    if (obj == Py_None) {
        *data = NULL;
        *length = NULL_LENGTH;
        return 1;
    }
    if (!PyBytes_CheckExact(obj)) {
        return 0;
    }
    *data = PyBytes_AS_STRING(obj);
    *length = PyBytes_GET_SIZE(obj);
    return 1;
}

/* The partition argument: None (0), or an int (1, *partition set; -1 if it does not
 * fit a long long, which no topic has). */
static int explicit_partition(PyObject *obj, long long *partition) {
    if (obj == Py_None) {
        return 0;
    }
    int overflow = 0;
    long long value = PyLong_AsLongLongAndOverflow(obj, &overflow);
    *partition = overflow ? -1 : value;
    return 1;
}

/* The fast path's reading of the arguments: 1 if every one is of the plain type
 * (topic an exact str, key and value None or exact bytes, partition None or an
 * exact int, timestamp None (now) or an exact int from 0 to Int64's largest); 0 if not
 * (a negative timestamp breaks a rule of the batch: the slow path refuses it). */
static int plain_record(PyObject *topic, PyObject *value, PyObject *key, PyObject *partition,
                        PyObject *timestamp, Record *r) {
    if (!PyUnicode_CheckExact(topic) || !plain_blob(key, &r->key, &r->key_length) ||
        !plain_blob(value, &r->value, &r->value_length) ||
        (partition != Py_None && !PyLong_CheckExact(partition))) {
        return 0;
    }
    r->headers_bytes = 0;
    r->has_partition = explicit_partition(partition, &r->partition);
    if (timestamp == Py_None) {
        r->timestamp_ms = now_ms();
        return 1;
    }
    int overflow = 0;
    if (!PyLong_CheckExact(timestamp)) {
        return 0;
    }
    r->timestamp_ms = PyLong_AsLongLongAndOverflow(timestamp, &overflow);
    return !overflow && r->timestamp_ms >= 0;
}

/* The fast path; see the top of the file. A future, None to decline (nothing
 * changed), or NULL with an error set. */
static PyObject *append_record(Appender *self, PyObject *topic, PyObject *value, PyObject *key,
                               PyObject *partition, PyObject *timestamp) {
    Record r;
    if (self->closed || !plain_record(topic, value, key, partition, timestamp, &r)) {
        Py_RETURN_NONE;
    }
    /* The one call here that can run Python code, and so let other threads in:
     * allocating a GC-tracked object may start a collection. So it comes before
     * any state is read. */
    FutureBase *future = (FutureBase *)self->future_type->tp_alloc(self->future_type, 0);
    if (future == NULL) {
        return NULL;
    }
    PyObject *capsule = PyDict_GetItemWithError(self->topics, topic);
    if (capsule == NULL) {
        Py_DECREF(future);
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    TopicSlots *t = PyCapsule_GetPointer(capsule, NULL);
    Placement p = place_record(self, t, &r);
    if (p.verdict != FITS) {
        Py_DECREF(future);
        Py_RETURN_NONE;
    }
    Slot *slot = &t->slots[p.partition];
    future->index = commit_record(self, slot, &r, p.record_bytes);
    if (future->index < 0) {
        Py_DECREF(future);
        return NULL;
    }
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

/* add()'s arguments, of the plain types the slow path has made them; TypeError or
 * OverflowError (a timestamp outside Int64) otherwise. */
static int slow_record(PyObject *const *args, Record *r) {
    const char *names[] = {"key", "value"};
    for (int i = 0; i < 2; i++) {
        const char **data = i == 0 ? &r->key : &r->value;
        Py_ssize_t *length = i == 0 ? &r->key_length : &r->value_length;
        if (!plain_blob(args[2 + i], data, length)) {
            PyErr_Format(PyExc_TypeError, "add(): %s must be bytes or None", names[i]);
            return -1;
        }
    }
    if (!PyUnicode_CheckExact(args[0]) || (args[1] != Py_None && !PyLong_Check(args[1])) ||
        !PyLong_Check(args[4]) || !PyLong_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError, "add(): topic must be a str, partition None or an "
                        "int, timestamp_ms and headers_bytes ints");
        return -1;
    }
    r->has_partition = explicit_partition(args[1], &r->partition);
    int overflow = 0;
    r->timestamp_ms = PyLong_AsLongLongAndOverflow(args[4], &overflow);
    if (overflow) {
        PyErr_Format(PyExc_OverflowError, "timestamp_ms %R does not fit an Int64", args[4]);
        return -1;
    }
    r->headers_bytes = PyLong_AsLongLong(args[5]);
    if (r->headers_bytes == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (r->headers_bytes < 0) {
        PyErr_Format(PyExc_ValueError, "add(): headers_bytes %lld is negative", r->headers_bytes);
        return -1;
    }
    return 0;
}

/* Open the slot's batch with the given columns (empty) and result. */
static int open_slot(Slot *slot, PyObject *columns, PyObject *result) {
    if (Py_TYPE(columns) != RecordColumns_API->type || ((Columns *)columns)->count != 0) {
        PyErr_SetString(PyExc_ValueError, "add(): a batch opens with empty RecordColumns");
        return -1;
    }
    slot->columns = (Columns *)Py_NewRef(columns);
    slot->result = Py_NewRef(result);
    slot->accounted_bytes = 0;
    return 0;
}

/* add(topic, partition, key, value, timestamp_ms, headers_bytes, open_columns,
 *     open_result) -> (verdict, partition, record_bytes, index): the slow path. */
static PyObject *appender_add(Appender *self, PyObject *const *args, Py_ssize_t nargs) {
    Record r;
    if (!check_arg_count("add", nargs, 8) || slow_record(args, &r) < 0) {
        return NULL;
    }
    TopicSlots *t = topic_slots(self, args[0]);
    if (t == NULL) {
        return NULL;
    }
    Placement p = place_record(self, t, &r);
    int opened = 0;
    if (p.verdict == NO_OPEN_BATCH && args[6] != Py_None) {
        if (open_slot(&t->slots[p.partition], args[6], args[7]) < 0) {
            return NULL;
        }
        opened = 1;
        p = place_record(self, t, &r);    /* an empty batch: FITS or FITS_AND_FILLS */
    }
    Py_ssize_t index = -1;
    if (p.verdict == FITS || p.verdict == FITS_AND_FILLS) {
        Slot *slot = &t->slots[p.partition];
        index = commit_record(self, slot, &r, p.record_bytes);
        if (index < 0) {
            if (opened) {          /* leave no trace: no empty batch stays open */
                Slot detached;
                slot_detach(slot, &detached);
                slot_clear(&detached);
            }
            return NULL;
        }
    }
    return Py_BuildValue("(inLn)", p.verdict, p.partition, p.record_bytes, index);
}

/* -1 with ValueError for a count outside 1..partitions_max or a sticky partition
 * outside the count; 0 otherwise. */
static int check_topic_counts(Appender *self, PyObject *topic, Py_ssize_t partition_count,
                              Py_ssize_t sticky) {
    if (partition_count < 1 || partition_count > self->partitions_max || sticky < 0 ||
        sticky >= partition_count) {
        PyErr_Format(PyExc_ValueError,
                     "topic %R: partition_count %zd (sticky %zd) must be 1 to %zd", topic,
                     partition_count, sticky, self->partitions_max);
        return -1;
    }
    return 0;
}

/* A topic's slots: ``partition_count`` empty ones, keyless records at ``sticky``, in a new
 * capsule that frees them with it (``*slots`` points into it); NULL with an exception
 * set, ValueError for counts check_topic_counts refuses. */
static PyObject *new_topic_slots(Appender *self, PyObject *topic, Py_ssize_t partition_count,
                                 Py_ssize_t sticky, TopicSlots **slots) {
    if (check_topic_counts(self, topic, partition_count, sticky) < 0) {
        return NULL;
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
    *slots = t;
    return capsule;
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
    if (check_topic_counts(self, topic, partition_count, sticky) < 0) {
        return NULL;
    }
    int known = PyDict_Contains(self->topics, topic);
    if (known != 0) {
        return known < 0 ? NULL : Py_NewRef(Py_None);   /* registered once */
    }
    TopicSlots *t;
    PyObject *capsule = new_topic_slots(self, topic, partition_count, sticky, &t);
    if (capsule == NULL) {
        return NULL;
    }
    int failed = PyDict_SetItem(self->topics, topic, capsule);
    Py_DECREF(capsule);
    return failed ? NULL : Py_NewRef(Py_None);
}

/* resize_topic(topic, partition_count, sticky): the topic's partitions from now on (the
 * producer learnt that the topic has grown, or was deleted and re-created with another
 * count). The open batches of partitions below both counts stay where they are; a
 * partition at or above the new count must have no open batch (close_batch it first:
 * ValueError, nothing changed, otherwise). The new slots replace the old in one step,
 * with the GIL held throughout, so append() sees either the old count or the new. */
static PyObject *appender_resize_topic(Appender *self, PyObject *args) {
    PyObject *topic;
    Py_ssize_t partition_count, sticky;
    if (!PyArg_ParseTuple(args, "Unn:resize_topic", &topic, &partition_count, &sticky)) {
        return NULL;
    }
    TopicSlots *old = topic_slots(self, topic);
    if (old == NULL || check_topic_counts(self, topic, partition_count, sticky) < 0) {
        return NULL;
    }
    for (Py_ssize_t p = partition_count; p < old->partition_count; p++) {
        if (old->slots[p].columns != NULL) {
            PyErr_Format(PyExc_ValueError,
                         "topic %R: partition %zd has an open batch; close it before the "
                         "topic goes to %zd partitions", topic, p, partition_count);
            return NULL;
        }
    }
    TopicSlots *t;
    PyObject *capsule = new_topic_slots(self, topic, partition_count, sticky, &t);
    if (capsule == NULL) {
        return NULL;
    }
    /* Move the kept batches (their references with them): the old slots are left
     * empty, so freeing them when the dict drops the old capsule decrefs nothing. */
    Py_ssize_t kept = partition_count < old->partition_count ? partition_count
                                                             : old->partition_count;
    memcpy(t->slots, old->slots, (size_t)kept * sizeof(Slot));
    memset(old->slots, 0, (size_t)kept * sizeof(Slot));
    if (PyDict_SetItem(self->topics, topic, capsule) < 0) {
        memcpy(old->slots, t->slots, (size_t)kept * sizeof(Slot));   /* give them back */
        memset(t->slots, 0, (size_t)kept * sizeof(Slot));
        Py_DECREF(capsule);
        return NULL;
    }
    Py_DECREF(capsule);
    Py_RETURN_NONE;
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
    Slot detached;
    long long accounted_bytes = slot_detach(slot, &detached);
    slot_clear(&detached);
    return PyLong_FromLongLong(accounted_bytes);
}

static PyObject *appender_release(Appender *self, PyObject *arg) {
    long long bytes = PyLong_AsLongLong(arg);
    if (bytes == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (bytes < 0 || bytes > self->buffered_bytes) {
        /* Giving back what was never counted would let the buffer overflow. */
        PyErr_Format(PyExc_AssertionError, "release(%lld) with %lld bytes buffered", bytes,
                     self->buffered_bytes);
        return NULL;
    }
    self->buffered_bytes -= bytes;
    Py_RETURN_NONE;
}

static PyObject *appender_buffer_has_room(Appender *self, PyObject *arg) {
    long long bytes = PyLong_AsLongLong(arg);
    if (bytes == -1 && PyErr_Occurred()) {
        return NULL;
    }
    return PyBool_FromLong(buffer_has_room(self, bytes));
}

static PyObject *appender_close(Appender *self, PyObject *unused) {
    self->closed = 1;
    Py_RETURN_NONE;
}

static PyMethodDef appender_methods[] = {
    {"append", (PyCFunction)(void (*)(void))appender_append, METH_FASTCALL,
     "append(topic, value, key, partition, timestamp_ms) -> RecordFuture, or None for the "
     "slow path (nothing changed)."},
    {"add", (PyCFunction)(void (*)(void))appender_add, METH_FASTCALL,
     "add(topic, partition, key, value, timestamp_ms, headers_bytes, open_columns,\n"
     "    open_result) -> (verdict, partition, record_bytes, index): where the record goes\n"
     "and whether it fits, appended (index >= 0) if the verdict is FITS or FITS_AND_FILLS.\n"
     "With open_columns (empty RecordColumns) and open_result, a partition without an open\n"
     "batch gets one with them, and the record, in the same call. Key and value bytes or\n"
     "None, partition None or an int, timestamp_ms an int."},
    {"add_topic", (PyCFunction)appender_add_topic, METH_VARARGS,
     "add_topic(topic, partition_count, sticky_partition): once per topic."},
    {"resize_topic", (PyCFunction)appender_resize_topic, METH_VARARGS,
     "resize_topic(topic, partition_count, sticky_partition): a known topic's new count; "
     "partitions it drops must have no open batch."},
    {"set_sticky", (PyCFunction)appender_set_sticky, METH_VARARGS,
     "set_sticky(topic, partition): where keyless records of the topic go."},
    {"close_batch", (PyCFunction)appender_close_batch, METH_VARARGS,
     "close_batch(topic, partition) -> accounted bytes: no more appends to the "
     "partition's batch."},
    {"release", (PyCFunction)appender_release, METH_O,
     "release(bytes): a closed batch's accounted bytes leave the buffer."},
    {"buffer_has_room", (PyCFunction)appender_buffer_has_room, METH_O,
     "buffer_has_room(record_bytes) -> bool: whether buffer_memory takes them now."},
    {"close", (PyCFunction)appender_close, METH_NOARGS,
     "close(): append() returns None from now on."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef appender_members[] = {
    {"buffered_bytes", T_LONGLONG, offsetof(Appender, buffered_bytes), READONLY,
     "accounted bytes of records not yet released"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject AppenderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "plinth.client._producer.Appender",
    .tp_doc = "Appender(*, future_type, batch_bytes_max, buffer_bytes_max, record_bytes_max, "
              "records_max, partitions_max): the open batches, where each record goes, and "
              "the per-record fast path. Any thread (GIL held).",
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
    "The producer's per-record path: futures, the open batches, the fast append.", -1, NULL,
};

static int add_verdicts(PyObject *m) {
    for (int verdict = 0; verdict < VERDICTS; verdict++) {
        if (PyModule_AddIntConstant(m, VERDICT_NAMES[verdict], verdict) < 0) {
            return -1;
        }
    }
    return 0;
}

PyMODINIT_FUNC PyInit__producer(void) {
    PyTypeObject *types[] = {&FutureBaseType, &AppenderType, &ProducerBaseType};
    const char *names[] = {"FutureBase", "Appender", "ProducerBase"};
    PyObject **strings[] = {&str_send_python, &str_value, &str_key, &str_partition,
                            &str_timestamp_ms};
    const char *texts[] = {"_send", "value", "key", "partition", "timestamp_ms"};
    if (import_record_columns_api() < 0) {
        return NULL;
    }
    for (int i = 0; i < 5; i++) {
        if ((*strings[i] = PyUnicode_InternFromString(texts[i])) == NULL) {
            return NULL;
        }
    }
    for (int i = 0; i < 3; i++) {
        if (PyType_Ready(types[i]) < 0) {
            return NULL;
        }
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    for (int i = 0; i < 3; i++) {
        if (PyModule_AddObjectRef(m, names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    if (add_verdicts(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
