/* Kafka's RecordBatch v2 (magic 2) in C, compiled into plinth.format._record_batch
 * beside the RecordBatch (format/_record_batch.c), for its three users:
 *
 *   shard     kafka_summarize(): the rules on a produced batch's header fields, and
 *             for an uncompressed batch the walk over every record (varints well
 *             formed and in bounds, lengths that match, offsetDelta == index, no
 *             trailing bytes, the timestamps against the header's).
 *   consumer  kafka_decode(): one ConsumerRecord per record of a stored batch, from
 *             its records section (the batch's own bytes, or what Python decompressed).
 *   converter kafka_from_canonical() / kafka_from_records(): a Plinth RecordBatch as
 *             one uncompressed Kafka batch, with its CRC.
 *
 * The byte layout is documented field by field at the top of format/kafka_batch.py,
 * the module's Python face; the positions below mirror it. The header is big-endian;
 * a record's integers are Kafka's varints (zigzag, 7 bits a byte, low first).
 *
 * Everything here reads untrusted bytes: every read is bounds-checked against the
 * end of its buffer before it happens, every length is checked against what is left,
 * and offsets and timestamps are computed with overflow checks. An error is a
 * ValueError naming the record, the byte and the numbers; format/kafka_batch.py
 * turns it into InvalidBatchError (shard) or CorruptDataError (consumer).
 *
 * The CRC-32C is not computed here: the callers pass the crc32c package's function
 * (hardware CRC), called once per batch.
 *
 * Threads: any thread holding the GIL; nothing here releases it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "record_batch_internal.h"

/* ---- The batch header: byte positions (format/kafka_batch.py's docstring) ---- */
#define K_BASE_OFFSET_AT 0              /* int64 */
#define K_BATCH_LENGTH_AT 8             /* int32: the bytes after this field */
#define K_LEADER_EPOCH_AT 12            /* int32 */
#define K_MAGIC_AT 16                   /* int8 */
#define K_CRC_AT 17                     /* uint32, CRC-32C of bytes K_ATTRIBUTES_AT.. */
#define K_ATTRIBUTES_AT 21              /* int16 */
#define K_LAST_OFFSET_DELTA_AT 23       /* int32 */
#define K_BASE_TIMESTAMP_AT 27          /* int64 */
#define K_MAX_TIMESTAMP_AT 35           /* int64 */
#define K_PRODUCER_ID_AT 43             /* int64 */
#define K_PRODUCER_EPOCH_AT 51          /* int16 */
#define K_BASE_SEQUENCE_AT 53           /* int32 */
#define K_RECORDS_COUNT_AT 57           /* int32 */
#define K_RECORDS_AT 61                 /* the records (compressed as one block, or not) */
#define K_LENGTH_COUNTED_FROM 12        /* batchLength counts from byte 12 */

#define K_MAGIC 2
#define K_COMPRESSION_MASK 0x07
#define K_TIMESTAMP_TYPE_BIT 0x08       /* 0 CreateTime, 1 LogAppendTime */
#define K_TRANSACTIONAL_BIT 0x10
#define K_CONTROL_BIT 0x20
#define K_COMPRESSION_CODECS 5          /* none, gzip, snappy, lz4, zstd */

#define K_VARINT_BYTES_MAX 5
#define K_VARLONG_BYTES_MAX 10
/* The smallest record: length, attributes, timestampDelta, offsetDelta, keyLength,
 * valueLength and headersCount, one byte each. */
#define K_RECORD_BYTES_MIN 7
/* The smallest header: keyLength and valueLength, one byte each. */
#define K_HEADER_BYTES_MIN 2
#define K_NULL_LENGTH (-1)

/* ==== Big-endian loads and stores ================================================= */

static inline uint64_t load_be(const unsigned char *p, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

static inline void store_be(unsigned char *p, uint64_t v, int bytes) {
    for (int i = bytes - 1; i >= 0; i--) {
        p[i] = (unsigned char)v;
        v >>= 8;
    }
}

#define LOAD_I64(p) ((int64_t)load_be((p), 8))
#define LOAD_I32(p) ((int32_t)(uint32_t)load_be((p), 4))
#define LOAD_I16(p) ((int16_t)(uint16_t)load_be((p), 2))

/* ==== Varints ======================================================================= */

/* Where a walk is in a buffer: [at, end). */
typedef struct {
    const unsigned char *at;
    const unsigned char *end;
} Reader;

/* An unsigned varint of at most max_bytes bytes whose value fits value_bits; 0, or
 * -1 if it runs past the end, is too long or too large (no exception set). */
static inline int read_raw_varint(Reader *r, int max_bytes, int value_bits, uint64_t *out) {
    if (r->at < r->end && *r->at < 0x80) {     /* most lengths and deltas: one byte */
        *out = *r->at++;
        return 0;
    }
    uint64_t value = 0;
    for (int i = 0; i < max_bytes; i++) {
        if (r->at >= r->end) {
            return -1;
        }
        unsigned char byte = *r->at++;
        value |= (uint64_t)(byte & 0x7f) << (7 * i);
        if ((byte & 0x80) == 0) {
            /* the last byte may carry bits past the value's width: refuse them */
            int used_bits = 7 * i + 7;
            if (used_bits > value_bits && (byte >> (value_bits - 7 * i)) != 0) {
                return -1;
            }
            *out = value;
            return 0;
        }
    }
    return -1;
}

static inline int read_varint(Reader *r, int32_t *out) {
    uint64_t raw;
    if (read_raw_varint(r, K_VARINT_BYTES_MAX, 32, &raw) < 0) {
        return -1;
    }
    uint32_t zigzag = (uint32_t)raw;
    *out = (int32_t)((zigzag >> 1) ^ (0u - (zigzag & 1)));
    return 0;
}

static inline int read_varlong(Reader *r, int64_t *out) {
    uint64_t raw;
    if (read_raw_varint(r, K_VARLONG_BYTES_MAX, 64, &raw) < 0) {
        return -1;
    }
    *out = (int64_t)((raw >> 1) ^ (0 - (raw & 1)));
    return 0;
}

static int varint_bytes(uint64_t raw) {
    int bytes = 1;
    while (raw >= 0x80) {
        raw >>= 7;
        bytes++;
    }
    return bytes;
}

static uint64_t zigzag32(int32_t v) { return (uint32_t)(((uint32_t)v << 1) ^ (uint32_t)(v >> 31)); }
static uint64_t zigzag64(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }

static unsigned char *write_raw_varint(unsigned char *p, uint64_t raw) {
    while (raw >= 0x80) {
        *p++ = (unsigned char)(raw | 0x80);
        raw >>= 7;
    }
    *p++ = (unsigned char)raw;
    return p;
}

/* ==== One record: parsing ============================================================ */

/* A record as parse_record found it; every span lies inside the records section. */
typedef struct {
    int64_t timestamp_delta_ms;
    int32_t offset_delta;
    const unsigned char *key;       /* NULL: null key */
    int32_t key_length;
    const unsigned char *value;     /* NULL: null value */
    int32_t value_length;
    const unsigned char *headers;   /* the first header; header_count of them, checked */
    int32_t header_count;
    const unsigned char *end;       /* the end of the record */
} KafkaRecord;

/* Where the walk is, for error messages. */
typedef struct {
    const unsigned char *records;   /* start of the records section */
    Py_ssize_t index;               /* the record being read */
} WalkPosition;

static int record_error(const WalkPosition *w, const Reader *r, const char *what) {
    PyErr_Format(PyExc_ValueError, "Kafka record %zd (at byte %zd of the records): %s",
                 w->index, (Py_ssize_t)(r->at - w->records), what);
    return -1;
}

/* A length-prefixed field (-1: null when nullable) inside the record body. */
static int read_span(Reader *body, const WalkPosition *w, int nullable, const char *what,
                     const unsigned char **at, int32_t *length) {
    if (read_varint(body, length) < 0) {
        char message[80];
        snprintf(message, sizeof message, "%s length is not a well-formed varint", what);
        return record_error(w, body, message);
    }
    if (*length == K_NULL_LENGTH && nullable) {
        *at = NULL;
        return 0;
    }
    if (*length < 0 || *length > body->end - body->at) {
        PyErr_Format(PyExc_ValueError,
                     "Kafka record %zd (at byte %zd of the records): %s length %d, "
                     "with %zd bytes left in the record", w->index,
                     (Py_ssize_t)(body->at - w->records), what, (int)*length,
                     (Py_ssize_t)(body->end - body->at));
        return -1;
    }
    *at = body->at;
    body->at += *length;
    return 0;
}

/* The headers of one record: each key (non-null) and value (nullable) in bounds. */
static int skip_headers(Reader *body, const WalkPosition *w, int32_t count) {
    if (count < 0 || count > (body->end - body->at) / K_HEADER_BYTES_MIN) {
        PyErr_Format(PyExc_ValueError,
                     "Kafka record %zd: headersCount %d with %zd bytes left in the record",
                     w->index, (int)count, (Py_ssize_t)(body->end - body->at));
        return -1;
    }
    for (int32_t i = 0; i < count; i++) {
        const unsigned char *at;
        int32_t length;
        if (read_span(body, w, 0, "header key", &at, &length) < 0 ||
            read_span(body, w, 1, "header value", &at, &length) < 0) {
            return -1;
        }
    }
    return 0;
}

/* The next record of the walk; r moves past it. 0, or -1 with ValueError. */
static int parse_record(Reader *r, const WalkPosition *w, KafkaRecord *out) {
    int32_t length;
    if (read_varint(r, &length) < 0) {
        return record_error(w, r, "its length is not a well-formed varint");
    }
    if (length < 1 || length > r->end - r->at) {
        PyErr_Format(PyExc_ValueError,
                     "Kafka record %zd (at byte %zd of the records): length %d, with %zd "
                     "bytes left", w->index, (Py_ssize_t)(r->at - w->records), (int)length,
                     (Py_ssize_t)(r->end - r->at));
        return -1;
    }
    Reader body = {r->at + 1, r->at + length};     /* past the attributes byte */
    r->at += length;
    if (read_varlong(&body, &out->timestamp_delta_ms) < 0) {
        return record_error(w, &body, "timestampDelta is not a well-formed varlong");
    }
    if (read_varint(&body, &out->offset_delta) < 0) {
        return record_error(w, &body, "offsetDelta is not a well-formed varint");
    }
    if (read_span(&body, w, 1, "key", &out->key, &out->key_length) < 0 ||
        read_span(&body, w, 1, "value", &out->value, &out->value_length) < 0) {
        return -1;
    }
    if (read_varint(&body, &out->header_count) < 0) {
        return record_error(w, &body, "headersCount is not a well-formed varint");
    }
    out->headers = body.at;
    out->end = body.end;
    if (skip_headers(&body, w, out->header_count) < 0) {
        return -1;
    }
    if (body.at != body.end) {
        PyErr_Format(PyExc_ValueError,
                     "Kafka record %zd: length %d, but its fields end %zd bytes before that",
                     w->index, (int)length, (Py_ssize_t)(body.end - body.at));
        return -1;
    }
    return 0;
}

/* ==== The batch header ================================================================ */

typedef struct {
    int64_t base_offset;
    int attributes;
    int32_t last_offset_delta;
    int64_t base_timestamp_ms;
    int64_t max_timestamp_ms;
    int64_t producer_id;
    int16_t producer_epoch;
    int32_t base_sequence;
    int32_t records_count;
} KafkaHeader;

/* The header of a batch of at least K_RECORDS_AT bytes. */
static void read_header(const unsigned char *batch, KafkaHeader *h) {
    h->base_offset = LOAD_I64(batch + K_BASE_OFFSET_AT);
    h->attributes = (uint16_t)LOAD_I16(batch + K_ATTRIBUTES_AT);
    h->last_offset_delta = LOAD_I32(batch + K_LAST_OFFSET_DELTA_AT);
    h->base_timestamp_ms = LOAD_I64(batch + K_BASE_TIMESTAMP_AT);
    h->max_timestamp_ms = LOAD_I64(batch + K_MAX_TIMESTAMP_AT);
    h->producer_id = LOAD_I64(batch + K_PRODUCER_ID_AT);
    h->producer_epoch = LOAD_I16(batch + K_PRODUCER_EPOCH_AT);
    h->base_sequence = LOAD_I32(batch + K_BASE_SEQUENCE_AT);
    h->records_count = LOAD_I32(batch + K_RECORDS_COUNT_AT);
}

static int check_attributes(int attributes) {
    if (attributes & K_TRANSACTIONAL_BIT) {
        PyErr_Format(PyExc_ValueError, "Kafka batch is transactional (attributes 0x%04x): "
                     "transactions are not supported", attributes);
        return -1;
    }
    if (attributes & K_CONTROL_BIT) {
        PyErr_Format(PyExc_ValueError, "Kafka batch is a control batch (attributes 0x%04x): "
                     "transactions are not supported", attributes);
        return -1;
    }
    if (attributes & K_TIMESTAMP_TYPE_BIT) {
        PyErr_Format(PyExc_ValueError, "Kafka batch has timestampType LogAppendTime "
                     "(attributes 0x%04x): a producer's batch must be CreateTime", attributes);
        return -1;
    }
    if ((attributes & K_COMPRESSION_MASK) >= K_COMPRESSION_CODECS) {
        PyErr_Format(PyExc_ValueError, "Kafka batch has compression codec %d (attributes "
                     "0x%04x): known codecs are 0 to %d", attributes & K_COMPRESSION_MASK,
                     attributes, K_COMPRESSION_CODECS - 1);
        return -1;
    }
    if (attributes & ~(K_COMPRESSION_MASK | K_TIMESTAMP_TYPE_BIT | K_TRANSACTIONAL_BIT |
                       K_CONTROL_BIT)) {
        PyErr_Format(PyExc_ValueError, "Kafka batch has unknown attribute bits set "
                     "(attributes 0x%04x): a producer sets only bits 0-2", attributes);
        return -1;
    }
    return 0;
}

/* The count rules, shared by the shard's check and the consumer's decode. */
static int check_count(const KafkaHeader *h, int64_t records_max) {
    if (h->records_count < 1 || h->records_count > records_max) {
        PyErr_Format(PyExc_ValueError, "Kafka batch has recordsCount %d, must be 1 to %lld",
                     (int)h->records_count, (long long)records_max);
        return -1;
    }
    if ((int64_t)h->last_offset_delta + 1 != h->records_count) {
        PyErr_Format(PyExc_ValueError, "Kafka batch has recordsCount %d but lastOffsetDelta "
                     "%d: must be recordsCount - 1", (int)h->records_count,
                     (int)h->last_offset_delta);
        return -1;
    }
    return 0;
}

/* Plinth's rules on the header fields (format/kafka_batch.py says why each). */
static int check_header(const KafkaHeader *h, int64_t records_max) {
    if (check_attributes(h->attributes) < 0 || check_count(h, records_max) < 0) {
        return -1;
    }
    if (h->producer_id < -1 || h->base_sequence < -1 ||
        (h->producer_id >= 0 && h->base_sequence < 0)) {
        PyErr_Format(PyExc_ValueError, "Kafka batch has producerId %lld with baseSequence %d: "
                     "both must be >= -1, and baseSequence >= 0 when producerId is set",
                     (long long)h->producer_id, (int)h->base_sequence);
        return -1;
    }
    return 0;
}

/* A record's timestamp, base + delta, without overflow; 0 or -1 with ValueError. */
static int record_timestamp(const KafkaHeader *h, const KafkaRecord *k, Py_ssize_t index,
                            int64_t *out) {
    if (__builtin_add_overflow(h->base_timestamp_ms, k->timestamp_delta_ms, out)) {
        PyErr_Format(PyExc_ValueError, "Kafka record %zd: baseTimestamp %lld + timestampDelta "
                     "%lld overflows an int64", index, (long long)h->base_timestamp_ms,
                     (long long)k->timestamp_delta_ms);
        return -1;
    }
    return 0;
}

static int check_offset_delta(const KafkaRecord *k, Py_ssize_t index) {
    if (k->offset_delta != index) {
        PyErr_Format(PyExc_ValueError, "Kafka record %zd has offsetDelta %d, must be its index",
                     index, (int)k->offset_delta);
        return -1;
    }
    return 0;
}

/* No byte after the last record. */
static int check_walk_end(const Reader *r, const KafkaHeader *h) {
    if (r->at != r->end) {
        PyErr_Format(PyExc_ValueError, "Kafka batch has %zd bytes after its %d records",
                     (Py_ssize_t)(r->end - r->at), (int)h->records_count);
        return -1;
    }
    return 0;
}

/* ==== The shard: kafka_summarize ======================================================= */

/* Every record of an uncompressed batch; sets *min_ms and *max_ms to the smallest and
 * the largest timestamp (checked by the caller: format/kafka_batch.py). */
static int walk_uncompressed(const KafkaHeader *h, const unsigned char *records,
                             Py_ssize_t records_bytes, int64_t *min_ms, int64_t *max_ms) {
    Reader r = {records, records + records_bytes};
    WalkPosition w = {records, 0};
    *max_ms = INT64_MIN;
    *min_ms = INT64_MAX;
    for (; w.index < h->records_count; w.index++) {
        KafkaRecord k;
        int64_t timestamp_ms;
        if (parse_record(&r, &w, &k) < 0 || check_offset_delta(&k, w.index) < 0 ||
            record_timestamp(h, &k, w.index, &timestamp_ms) < 0) {
            return -1;
        }
        *min_ms = timestamp_ms < *min_ms ? timestamp_ms : *min_ms;
        *max_ms = timestamp_ms > *max_ms ? timestamp_ms : *max_ms;
    }
    return check_walk_end(&r, h);
}

static PyObject *new_summary(PyObject *summary_type, const KafkaHeader *h, int64_t base_ms,
                             int64_t max_ms) {
    return PyObject_CallFunction(summary_type, "iLLLii", (int)h->records_count,
                                 (long long)max_ms, (long long)base_ms,
                                 (long long)h->producer_id, (int)h->base_sequence,
                                 (int)h->producer_epoch);
}

/* kafka_summarize(batch, records_max, summary_type): the batch's size, magic, length
 * and CRC were checked (format/kafka_batch.py); the rest of the rules here. */
static PyObject *kafka_summarize(PyObject *self, PyObject *args) {
    Py_buffer view;
    long long records_max;
    PyObject *summary_type;
    if (!PyArg_ParseTuple(args, "y*LO:kafka_summarize", &view, &records_max, &summary_type)) {
        return NULL;
    }
    PyObject *result = NULL;
    KafkaHeader h;
    if (view.len < K_RECORDS_AT) {
        PyErr_Format(PyExc_ValueError, "Kafka batch of %zd bytes is shorter than its %d-byte "
                     "header", view.len, K_RECORDS_AT);
        goto done;
    }
    read_header(view.buf, &h);
    if (check_header(&h, records_max) < 0) {
        goto done;
    }
    /* A compressed batch's header is believed (the shard does not decompress), but a
     * maxTimestamp below baseTimestamp (kafkajs compares timestamps as strings) is
     * taken as baseTimestamp; an uncompressed batch's records say both. */
    int64_t base_ms = h.base_timestamp_ms;
    int64_t max_ms = h.max_timestamp_ms > base_ms ? h.max_timestamp_ms : base_ms;
    if ((h.attributes & K_COMPRESSION_MASK) == 0 &&
        walk_uncompressed(&h, (const unsigned char *)view.buf + K_RECORDS_AT,
                          view.len - K_RECORDS_AT, &base_ms, &max_ms) < 0) {
        goto done;
    }
    result = new_summary(summary_type, &h, base_ms, max_ms);
done:
    PyBuffer_Release(&view);
    return result;
}

/* ==== The consumer: kafka_decode ======================================================== */

static PyObject *bytes_or_none(const unsigned char *at, int32_t length) {
    if (at == NULL) {
        return Py_NewRef(Py_None);
    }
    return PyBytes_FromStringAndSize((const char *)at, length);
}

/* One header as (str, bytes or None). A key that is not UTF-8 keeps its bytes as
 * surrogate escapes (key.encode("utf-8", "surrogateescape") gives them back). */
static PyObject *header_tuple(Reader *body, const WalkPosition *w) {
    const unsigned char *key, *value;
    int32_t key_length, value_length;
    if (read_span(body, w, 0, "header key", &key, &key_length) < 0 ||
        read_span(body, w, 1, "header value", &value, &value_length) < 0) {
        return NULL;
    }
    PyObject *key_str = PyUnicode_DecodeUTF8((const char *)key, key_length, "surrogateescape");
    if (key_str == NULL) {
        return NULL;
    }
    PyObject *value_obj = bytes_or_none(value, value_length);
    if (value_obj == NULL) {
        Py_DECREF(key_str);
        return NULL;
    }
    PyObject *pair = PyTuple_New(2);
    if (pair == NULL) {
        Py_DECREF(key_str);
        Py_DECREF(value_obj);
        return NULL;
    }
    PyTuple_SET_ITEM(pair, 0, key_str);
    PyTuple_SET_ITEM(pair, 1, value_obj);
    return pair;
}

/* The record's headers as its list of (str, bytes or None); the record becomes
 * tracked by the GC, as it now holds a list. */
static int attach_headers(Record *r, const KafkaRecord *k, const WalkPosition *w) {
    PyObject *list = PyList_New(k->header_count);
    if (list == NULL) {
        return -1;
    }
    r->headers = list;      /* the unset items are NULL, which list_dealloc skips */
    PyObject_GC_Track((PyObject *)r);
    Reader body = {k->headers, k->end};
    for (int32_t i = 0; i < k->header_count; i++) {
        PyObject *pair = header_tuple(&body, w);
        if (pair == NULL) {
            return -1;
        }
        PyList_SET_ITEM(list, i, pair);
    }
    return 0;
}

typedef struct {
    PyObject *topic;
    PyObject *partition;
    KafkaHeader h;
    long long offset_min;
} DecodeContext;

/* One ConsumerRecord for a parsed record. */
static PyObject *new_record(const DecodeContext *c, const KafkaRecord *k, Py_ssize_t index,
                            const WalkPosition *w) {
    int64_t timestamp_ms;
    if (c->h.attributes & K_TIMESTAMP_TYPE_BIT) {   /* LogAppendTime: the batch's */
        timestamp_ms = c->h.max_timestamp_ms;
    } else if (record_timestamp(&c->h, k, index, &timestamp_ms) < 0) {
        return NULL;
    }
    Record *r = record_alloc();
    if (r == NULL) {
        return NULL;
    }
    r->topic = Py_NewRef(c->topic);
    r->partition = Py_NewRef(c->partition);
    r->offset = c->h.base_offset + index;
    r->timestamp_ms = timestamp_ms;
    r->key = bytes_or_none(k->key, k->key_length);
    r->value = r->key != NULL ? bytes_or_none(k->value, k->value_length) : NULL;
    if (r->value == NULL) {
        Py_DECREF(r);
        return NULL;
    }
    if (k->header_count > 0 && attach_headers(r, k, w) < 0) {
        Py_DECREF(r);
        return NULL;
    }
    return (PyObject *)r;
}

/* The index of the record with offset offset_min, clamped to 0..count. */
static Py_ssize_t first_index(int64_t base_offset, long long offset_min, Py_ssize_t count) {
    if (offset_min <= base_offset) {
        return 0;
    }
    uint64_t skip = (uint64_t)offset_min - (uint64_t)base_offset;
    return skip < (uint64_t)count ? (Py_ssize_t)skip : count;
}

/* What keeps the decode's numbers and its list bounded, before any record is built. */
static int check_decodable(const KafkaHeader *h, Py_ssize_t records_bytes,
                           long long records_max) {
    if (check_count(h, records_max) < 0) {
        return -1;
    }
    if (h->records_count > records_bytes / K_RECORD_BYTES_MIN) {
        PyErr_Format(PyExc_ValueError, "Kafka batch has recordsCount %d, but its %zd bytes of "
                     "records hold at most %zd", (int)h->records_count, records_bytes,
                     records_bytes / K_RECORD_BYTES_MIN);
        return -1;
    }
    if (h->base_offset < 0 || h->base_offset > INT64_MAX - h->last_offset_delta) {
        PyErr_Format(PyExc_ValueError, "Kafka batch baseOffset %lld with lastOffsetDelta %d is "
                     "out of range", (long long)h->base_offset, (int)h->last_offset_delta);
        return -1;
    }
    return 0;
}

/* The records from offset_min on, walking every record (the later ones only to be
 * sure the batch is whole). */
static PyObject *decode_walk(const DecodeContext *c, const unsigned char *records,
                             Py_ssize_t records_bytes) {
    Py_ssize_t count = c->h.records_count;
    Py_ssize_t first = first_index(c->h.base_offset, c->offset_min, count);
    PyObject *list = PyList_New(count - first);
    if (list == NULL) {
        return NULL;
    }
    Reader r = {records, records + records_bytes};
    WalkPosition w = {records, 0};
    for (; w.index < count; w.index++) {
        KafkaRecord k;
        if (parse_record(&r, &w, &k) < 0 || check_offset_delta(&k, w.index) < 0) {
            goto failed;
        }
        if (w.index >= first) {
            PyObject *record = new_record(c, &k, w.index, &w);
            if (record == NULL) {
                goto failed;
            }
            PyList_SET_ITEM(list, w.index - first, record);
        }
    }
    if (check_walk_end(&r, &c->h) == 0) {
        return list;
    }
failed:
    Py_DECREF(list);        /* the unset items are NULL, which list_dealloc skips */
    return NULL;
}

/* kafka_decode(topic, partition, batch, records, offset_min, records_max): batch is the
 * whole stored batch (its header is read), records its records section as bytes:
 * batch[61:] if uncompressed, else what Python decompressed. */
static PyObject *kafka_decode(PyObject *self, PyObject *args) {
    DecodeContext c;
    Py_buffer batch, records;
    long long records_max;
    if (!PyArg_ParseTuple(args, "OOy*y*LL:kafka_decode", &c.topic, &c.partition, &batch,
                          &records, &c.offset_min, &records_max)) {
        return NULL;
    }
    PyObject *result = NULL;
    if (batch.len < K_RECORDS_AT) {
        PyErr_Format(PyExc_ValueError, "Kafka batch of %zd bytes is shorter than its %d-byte "
                     "header", batch.len, K_RECORDS_AT);
    } else {
        read_header(batch.buf, &c.h);
        if (check_decodable(&c.h, records.len, records_max) == 0) {
            result = decode_walk(&c, records.buf, records.len);
        }
    }
    PyBuffer_Release(&batch);
    PyBuffer_Release(&records);
    return result;
}

/* ==== The converter: a Plinth RecordBatch as a Kafka batch ============================= */

/* One record to write, from either source. */
typedef struct {
    int64_t timestamp_ms;
    const unsigned char *key;       /* key_length K_NULL_LENGTH: null */
    Py_ssize_t key_length;
    const unsigned char *value;
    Py_ssize_t value_length;
    PyObject *headers;              /* a list of (str, bytes), or NULL */
} SourceRecord;

/* The records of a canonical RecordBatch (its columns), or a list of ConsumerRecords. */
typedef struct {
    const BatchFields *fields;      /* the columns, or NULL */
    PyObject *records;              /* the list, or NULL */
    Py_ssize_t count;
    uint64_t key_at, value_at;      /* where the next key and value start (columns) */
    int64_t base_timestamp_ms;      /* the Kafka batch's: record 0's timestamp */
    int64_t max_timestamp_ms;
} Source;

static void column_entry(const Blob *lengths, const Blob *blob, Py_ssize_t i, uint64_t *at,
                         const unsigned char **out, Py_ssize_t *length) {
    int32_t entry = read_i32_le(lengths->at + COLUMN_ENTRY_BYTES * i);
    *length = entry;
    *out = entry == NULL_LENGTH ? NULL : blob->at + *at;
    *at += entry > 0 ? (uint64_t)entry : 0;
}

static int bytes_field(PyObject *o, const char *what, Py_ssize_t i,
                       const unsigned char **out, Py_ssize_t *length) {
    if (o == Py_None) {
        *out = NULL;
        *length = K_NULL_LENGTH;
        return 0;
    }
    if (!PyBytes_Check(o) || PyBytes_GET_SIZE(o) > INT32_MAX) {
        PyErr_Format(PyExc_TypeError, "record %zd: %s must be bytes of at most %d bytes or "
                     "None, got %.100s", i, what, INT32_MAX, Py_TYPE(o)->tp_name);
        return -1;
    }
    *out = (const unsigned char *)PyBytes_AS_STRING(o);
    *length = PyBytes_GET_SIZE(o);
    return 0;
}

/* Record i of the source; the columns' record i needs records 0..i-1 read before. */
static int source_record(Source *s, Py_ssize_t i, SourceRecord *out) {
    if (s->fields != NULL) {
        const Blob *c = s->fields->columns;
        out->timestamp_ms = s->fields->base_timestamp_ms +
                            (int64_t)read_u32_le(c[DELTAS].at + COLUMN_ENTRY_BYTES * i);
        column_entry(&c[KEY_LENGTHS], &c[KEYS], i, &s->key_at, &out->key, &out->key_length);
        column_entry(&c[VALUE_LENGTHS], &c[VALUES], i, &s->value_at, &out->value,
                     &out->value_length);
        out->headers = NULL;
        return 0;
    }
    PyObject *item = PyList_GET_ITEM(s->records, i);
    if (!PyObject_TypeCheck(item, &RecordType)) {
        PyErr_Format(PyExc_TypeError, "record %zd is a %.100s, not a ConsumerRecord", i,
                     Py_TYPE(item)->tp_name);
        return -1;
    }
    Record *r = (Record *)item;
    out->timestamp_ms = r->timestamp_ms;
    out->headers = r->headers;
    if (r->headers != NULL && !PyList_Check(r->headers)) {
        PyErr_Format(PyExc_TypeError, "record %zd: headers must be a list", i);
        return -1;
    }
    return bytes_field(r->key, "key", i, &out->key, &out->key_length) < 0 ? -1
           : bytes_field(r->value, "value", i, &out->value, &out->value_length);
}

/* A header as key (UTF-8) and value (NULL for None). */
static int header_fields(PyObject *pair, Py_ssize_t i, const char **key, Py_ssize_t *key_length,
                         const unsigned char **value, Py_ssize_t *value_length) {
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
        !PyUnicode_Check(PyTuple_GET_ITEM(pair, 0))) {
        PyErr_Format(PyExc_TypeError, "record %zd: a header must be a (str, bytes) tuple", i);
        return -1;
    }
    *key = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 0), key_length);
    if (*key == NULL || bytes_field(PyTuple_GET_ITEM(pair, 1), "header value", i, value,
                                    value_length) < 0) {
        return -1;
    }
    if (*key_length > INT32_MAX) {
        PyErr_Format(PyExc_OverflowError, "record %zd: header key of %zd bytes", i, *key_length);
        return -1;
    }
    return 0;
}

static int64_t length_field_bytes(Py_ssize_t length) {
    return varint_bytes(zigzag32((int32_t)length)) + (length > 0 ? length : 0);
}

/* The bytes the record's headers take (count varint included); -1 with an exception. */
static int64_t headers_bytes(PyObject *headers, Py_ssize_t i) {
    Py_ssize_t count = headers != NULL ? PyList_GET_SIZE(headers) : 0;
    if (count > INT32_MAX) {
        PyErr_Format(PyExc_OverflowError, "record %zd has %zd headers", i, count);
        return -1;
    }
    int64_t bytes = varint_bytes(zigzag32((int32_t)count));
    for (Py_ssize_t h = 0; h < count; h++) {
        const char *key;
        const unsigned char *value;
        Py_ssize_t key_length, value_length;
        if (header_fields(PyList_GET_ITEM(headers, h), i, &key, &key_length, &value,
                          &value_length) < 0) {
            return -1;
        }
        bytes += length_field_bytes(key_length) + length_field_bytes(value_length);
    }
    return bytes;
}

/* The bytes of record i after its length varint; -1 with an exception. */
static int64_t record_body_bytes(const SourceRecord *s, Py_ssize_t i, int64_t base_ms) {
    int64_t header_bytes = headers_bytes(s->headers, i);
    if (header_bytes < 0) {
        return -1;
    }
    int64_t bytes = 1 + varint_bytes(zigzag64(s->timestamp_ms - base_ms)) +
                    varint_bytes(zigzag32((int32_t)i)) + length_field_bytes(s->key_length) +
                    length_field_bytes(s->value_length) + header_bytes;
    if (bytes > INT32_MAX) {
        PyErr_Format(PyExc_OverflowError, "record %zd is %lld bytes in a Kafka batch, over %d",
                     i, (long long)bytes, INT32_MAX);
        return -1;
    }
    return bytes;
}

static unsigned char *write_length_field(unsigned char *p, const void *at, Py_ssize_t length) {
    p = write_raw_varint(p, zigzag32((int32_t)length));
    if (length > 0) {
        memcpy(p, at, (size_t)length);
        p += length;
    }
    return p;
}

/* Record i, whose body record_body_bytes measured (so no error is left to find). */
static unsigned char *write_record(unsigned char *p, const SourceRecord *s, Py_ssize_t i,
                                   int64_t base_ms, int64_t body_bytes) {
    p = write_raw_varint(p, zigzag32((int32_t)body_bytes));
    *p++ = 0;                                                   /* attributes */
    p = write_raw_varint(p, zigzag64(s->timestamp_ms - base_ms));
    p = write_raw_varint(p, zigzag32((int32_t)i));
    p = write_length_field(p, s->key, s->key_length);
    p = write_length_field(p, s->value, s->value_length);
    Py_ssize_t count = s->headers != NULL ? PyList_GET_SIZE(s->headers) : 0;
    p = write_raw_varint(p, zigzag32((int32_t)count));
    for (Py_ssize_t h = 0; h < count; h++) {
        const char *key;
        const unsigned char *value;
        Py_ssize_t key_length, value_length;
        header_fields(PyList_GET_ITEM(s->headers, h), i, &key, &key_length, &value,
                      &value_length);
        p = write_length_field(p, key, key_length);
        p = write_length_field(p, value, value_length);
    }
    return p;
}

/* The batch's size: header and every record; -1 with an exception. Resets the source. */
static int64_t batch_bytes(Source *s) {
    int64_t total = K_RECORDS_AT;
    for (Py_ssize_t i = 0; i < s->count; i++) {
        SourceRecord r;
        int64_t body;
        if (source_record(s, i, &r) < 0 || (body = record_body_bytes(&r, i, s->base_timestamp_ms)) < 0) {
            return -1;
        }
        total += varint_bytes(zigzag32((int32_t)body)) + body;
        if (total - K_LENGTH_COUNTED_FROM > INT32_MAX) {
            PyErr_Format(PyExc_OverflowError, "Kafka batch of %zd records is over %d bytes",
                         s->count, INT32_MAX);
            return -1;
        }
    }
    s->key_at = s->value_at = 0;
    return total;
}

typedef struct {
    int64_t base_offset;
    int32_t leader_epoch;
    int64_t producer_id;
    int32_t base_sequence;
    PyObject *crc32c;               /* crc32c.crc32c */
} BatchStamp;

static void write_batch_header(unsigned char *out, int64_t total, const Source *s,
                               const BatchStamp *b) {
    store_be(out + K_BASE_OFFSET_AT, (uint64_t)b->base_offset, 8);
    store_be(out + K_BATCH_LENGTH_AT, (uint64_t)(total - K_LENGTH_COUNTED_FROM), 4);
    store_be(out + K_LEADER_EPOCH_AT, (uint32_t)b->leader_epoch, 4);
    out[K_MAGIC_AT] = K_MAGIC;
    store_be(out + K_CRC_AT, 0, 4);                             /* set last */
    store_be(out + K_ATTRIBUTES_AT, 0, 2);      /* uncompressed, CreateTime */
    store_be(out + K_LAST_OFFSET_DELTA_AT, (uint64_t)(s->count - 1), 4);
    store_be(out + K_BASE_TIMESTAMP_AT, (uint64_t)s->base_timestamp_ms, 8);
    store_be(out + K_MAX_TIMESTAMP_AT, (uint64_t)s->max_timestamp_ms, 8);
    store_be(out + K_PRODUCER_ID_AT, (uint64_t)b->producer_id, 8);
    /* Plinth has no producer epochs: 0 for an idempotent producer (what InitProducerId
     * answers), -1 (Kafka's NO_PRODUCER_EPOCH) otherwise. */
    store_be(out + K_PRODUCER_EPOCH_AT, b->producer_id >= 0 ? 0 : 0xffff, 2);
    store_be(out + K_BASE_SEQUENCE_AT, (uint32_t)b->base_sequence, 4);
    store_be(out + K_RECORDS_COUNT_AT, (uint64_t)s->count, 4);
}

/* The CRC-32C of bytes K_ATTRIBUTES_AT.., by crc32c.crc32c, into the header. */
static int write_crc(unsigned char *out, int64_t total, PyObject *crc32c) {
    PyObject *view = PyMemoryView_FromMemory((char *)out + K_ATTRIBUTES_AT,
                                             (Py_ssize_t)(total - K_ATTRIBUTES_AT), PyBUF_READ);
    if (view == NULL) {
        return -1;
    }
    PyObject *crc = PyObject_CallOneArg(crc32c, view);
    Py_DECREF(view);
    if (crc == NULL) {
        return -1;
    }
    unsigned long value = PyLong_AsUnsignedLong(crc);
    Py_DECREF(crc);
    if (value == (unsigned long)-1 && PyErr_Occurred()) {
        return -1;
    }
    store_be(out + K_CRC_AT, (uint32_t)value, 4);
    return 0;
}

/* The whole Kafka batch: measure, allocate once, write, checksum. */
static PyObject *write_batch(Source *s, const BatchStamp *b) {
    int64_t total = batch_bytes(s);
    if (total < 0) {
        return NULL;
    }
    PyObject *batch = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (batch == NULL) {
        return NULL;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(batch);
    write_batch_header(out, total, s, b);
    unsigned char *p = out + K_RECORDS_AT;
    for (Py_ssize_t i = 0; i < s->count; i++) {
        SourceRecord r;
        source_record(s, i, &r);        /* batch_bytes read every record without error */
        p = write_record(p, &r, i, s->base_timestamp_ms,
                         record_body_bytes(&r, i, s->base_timestamp_ms));
    }
    if (p != out + total || write_crc(out, total, b->crc32c) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_SystemError, "Kafka batch written to %zd bytes of %lld",
                         (Py_ssize_t)(p - out), (long long)total);
        }
        Py_DECREF(batch);
        return NULL;
    }
    return batch;
}

/* kafka_from_canonical(batch, base_offset, leader_epoch, records_max, crc32c): a Plinth
 * RecordBatch in the canonical layout as a Kafka batch; None for another layout;
 * ValueError if the stored batch breaks a rule of the schema. */
static PyObject *kafka_from_canonical(PyObject *self, PyObject *args) {
    Py_buffer view;
    BatchStamp b;
    unsigned long long records_max;
    if (!PyArg_ParseTuple(args, "y*LiKO:kafka_from_canonical", &view, &b.base_offset,
                          &b.leader_epoch, &records_max, &b.crc32c)) {
        return NULL;
    }
    BatchFields f;
    PyObject *result = NULL;
    if (!parse_canonical(&f, view.buf, view.len)) {
        result = Py_NewRef(Py_None);
    } else if (check_rules(&f, records_max) == 0) {
        /* baseTimestamp is record 0's, as Kafka's DefaultRecordBatch documents it; the
         * rules hold every timestamp in 0 .. base + UInt32, so no delta overflows */
        int64_t first_ms = f.base_timestamp_ms + (int64_t)read_u32_le(f.columns[DELTAS].at);
        Source s = {&f, NULL, (Py_ssize_t)f.record_count, 0, 0, first_ms, f.max_timestamp_ms};
        b.producer_id = f.producer_id;
        b.base_sequence = (int32_t)f.base_sequence;
        result = write_batch(&s, &b);
    }
    PyBuffer_Release(&view);
    return result;
}

/* The first record's timestamp (the batch's baseTimestamp) and the largest; every
 * timestamp >= 0, so that no delta from the first overflows. */
static int records_time_range(Source *s) {
    int64_t min_ms = 0;
    for (Py_ssize_t i = 0; i < s->count; i++) {
        PyObject *item = PyList_GET_ITEM(s->records, i);
        if (!PyObject_TypeCheck(item, &RecordType)) {
            PyErr_Format(PyExc_TypeError, "record %zd is a %.100s, not a ConsumerRecord", i,
                         Py_TYPE(item)->tp_name);
            return -1;
        }
        int64_t timestamp_ms = ((Record *)item)->timestamp_ms;
        if (i == 0) {
            s->base_timestamp_ms = timestamp_ms;
        }
        min_ms = i == 0 || timestamp_ms < min_ms ? timestamp_ms : min_ms;
        s->max_timestamp_ms = i == 0 || timestamp_ms > s->max_timestamp_ms
                              ? timestamp_ms : s->max_timestamp_ms;
    }
    if (min_ms < 0) {
        PyErr_Format(PyExc_ValueError, "record timestamp %lld ms is negative", (long long)min_ms);
        return -1;
    }
    return 0;
}

/* kafka_from_records(records, base_offset, leader_epoch, producer_id, base_sequence,
 * records_max, crc32c): a list of ConsumerRecords (their keys, values, headers and
 * timestamps; offsets are base_offset + index) as one uncompressed Kafka batch. */
static PyObject *kafka_from_records(PyObject *self, PyObject *args) {
    Source s = {NULL, NULL, 0, 0, 0, 0, 0};
    BatchStamp b;
    long long records_max;
    if (!PyArg_ParseTuple(args, "O!LiLiLO:kafka_from_records", &PyList_Type, &s.records,
                          &b.base_offset, &b.leader_epoch, &b.producer_id, &b.base_sequence,
                          &records_max, &b.crc32c)) {
        return NULL;
    }
    s.count = PyList_GET_SIZE(s.records);
    if (s.count < 1 || s.count > records_max) {
        PyErr_Format(PyExc_ValueError, "a Kafka batch holds 1 to %lld records, not %zd",
                     records_max, s.count);
        return NULL;
    }
    if (records_time_range(&s) < 0) {
        return NULL;
    }
    return write_batch(&s, &b);
}

PyMethodDef kafka_batch_methods[] = {
    {"kafka_summarize", kafka_summarize, METH_VARARGS,
     "kafka_summarize(batch, records_max, summary_type) -> summary_type(record_count,\n"
     "max_timestamp_ms, base_timestamp_ms, producer_id, base_sequence, producer_epoch): the\n"
     "rules on a Kafka batch whose size, magic, batchLength and CRC were checked; for an\n"
     "uncompressed batch every record walked, its timestamps the records' smallest and\n"
     "largest (not checked: the caller's). ValueError (the rule broken, with its\n"
     "numbers) otherwise."},
    {"kafka_decode", kafka_decode, METH_VARARGS,
     "kafka_decode(topic, partition, batch, records, offset_min, records_max) -> list of\n"
     "ConsumerRecord from offset_min on; records is the records section, uncompressed.\n"
     "ValueError if a bound is broken."},
    {"kafka_from_canonical", kafka_from_canonical, METH_VARARGS,
     "kafka_from_canonical(batch, base_offset, leader_epoch, records_max, crc32c) -> bytes:\n"
     "a canonical RecordBatch as one uncompressed Kafka batch; None for another layout."},
    {"kafka_from_records", kafka_from_records, METH_VARARGS,
     "kafka_from_records(records, base_offset, leader_epoch, producer_id, base_sequence,\n"
     "records_max, crc32c) -> bytes: a list of ConsumerRecord as one uncompressed Kafka batch."},
    {NULL, NULL, 0, NULL},
};
