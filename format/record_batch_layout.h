/* The byte layout of a RecordBatch (schemas/record_batch.capnp) as Plinth writes
 * it: every constant of it and the little-endian helpers that read and write it,
 * each defined once. Included by format/_record_batch.c, which writes this layout
 * (RecordColumns.encode) and reads it (the canonical parser), and, through
 * format/record_columns_api.h, by client/_producer.c, which counts records in
 * the same bytes.
 *
 * The canonical layout: one Cap'n Proto segment, laid out as pycapnp lays out
 * RecordBatch.new_message(...) with the columns set in schema order, so that the
 * bytes are identical. All integers little-endian; a word is 8 bytes; "segment
 * word n" starts at byte 8 + 8n of the message.
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
 *   segment word 10    headers pointer: null (a batch with headers is re-encoded
 *                      by pycapnp, format/record_batch.py, and is not canonical)
 *   segment words 11-  the blobs, each zero-padded to a word; the last one ends
 *                      the segment
 *
 * The columns: timestampDeltasMs is recordCount x UInt32 (timestamp -
 * baseTimestampMs), keyLengths and valueLengths recordCount x Int32 (-1: null),
 * keys and values the non-null keys and values concatenated in record order.
 */
#ifndef PLINTH_RECORD_BATCH_LAYOUT_H
#define PLINTH_RECORD_BATCH_LAYOUT_H

#include <stdint.h>
#include <string.h>

/* --- The message ------------------------------------------------------------------ */

#define WORD_BYTES 8
#define SEGMENT_TABLE_BYTES 8                  /* one segment: count - 1, size in words */
#define ROOT_DATA_WORDS 4
#define ROOT_POINTER_WORDS 6
#define ROOT_POINTER_UPPER (ROOT_DATA_WORDS | (ROOT_POINTER_WORDS << 16))
#define DATA_POINTERS 5                        /* the five Data columns */
#define DATA_AT_WORD 1                         /* segment word of the data section */
#define POINTERS_AT_WORD (DATA_AT_WORD + ROOT_DATA_WORDS)              /* 5 */
#define HEADERS_POINTER_WORD (POINTERS_AT_WORD + DATA_POINTERS)        /* 10 */
#define BLOBS_AT_WORD (POINTERS_AT_WORD + ROOT_POINTER_WORDS)          /* 11 */

/* Byte positions of the fields in the data section. */
#define RECORD_COUNT_AT 0
#define BASE_SEQUENCE_AT 4
#define BASE_TIMESTAMP_AT 8
#define MAX_TIMESTAMP_AT 16
#define PRODUCER_ID_AT 24

/* Cap'n Proto list pointers. */
#define LIST_POINTER_KIND 1u
#define BYTE_ELEMENT_SIZE 2u
#define OFFSET_SIGN_BIT (1u << 29)             /* of the 30-bit signed pointer offset */
#define BLOB_BYTES_MAX ((1u << 29) - 1)        /* a list pointer's 29-bit element count */

/* The columns, in schema order (their pointers are segment words 5-9). */
enum { DELTAS, KEY_LENGTHS, KEYS, VALUE_LENGTHS, VALUES };

#define COLUMN_ENTRY_BYTES 4                   /* one Int32 or UInt32 per record */
#define NULL_LENGTH (-1)                       /* keyLengths / valueLengths of a null */
/* A UInt32 delta: the most the timestamps of one batch may span. */
#define TIMESTAMP_SPAN_MS_MAX UINT32_MAX

/* --- Sizes, for whoever must bound an encoded batch before writing it ---------------- */

/* What one record adds to an encoded batch besides its key, value and headers: its
 * entry in each of timestampDeltasMs, keyLengths and valueLengths. The producer
 * counts each record as this plus its key, value and headers (client/_producer.c),
 * against batch_bytes_max and buffer_memory. */
#define RECORD_OVERHEAD_BYTES (3 * COLUMN_ENTRY_BYTES)
/* Everything of an encoded batch that is not a record's: segment table, root
 * pointer, data section and pointers, up to 7 bytes of padding after each of the
 * five blobs, and the tag of the headers list. */
#define BATCH_OVERHEAD_BYTES \
    (SEGMENT_TABLE_BYTES + WORD_BYTES * (1 + ROOT_DATA_WORDS + ROOT_POINTER_WORDS) + \
     DATA_POINTERS * (WORD_BYTES - 1) + WORD_BYTES)
/* A record with headers (pycapnp's layout): its RecordHeaders struct (index and
 * entries pointer, 16 bytes) and the tag of its entries list. */
#define RECORD_HEADERS_OVERHEAD_BYTES (2 * WORD_BYTES + WORD_BYTES)
/* One header entry besides its key and value: the Header struct (two pointers),
 * the key's NUL, and up to 7 bytes of padding after the key and the value. */
#define HEADER_OVERHEAD_BYTES (2 * WORD_BYTES + 1 + (WORD_BYTES - 1) + (WORD_BYTES - 1))

/* --- Little-endian loads and stores ---------------------------------------------------
 * The message may sit at any address (a ZeroMQ frame), so every access goes through
 * memcpy, which compiles to one unaligned load or store. */

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define LAYOUT_HOST_IS_LITTLE_ENDIAN 1
#else
#define LAYOUT_HOST_IS_LITTLE_ENDIAN 0
#endif

static inline uint32_t read_u32_le(const unsigned char *p) {
#if LAYOUT_HOST_IS_LITTLE_ENDIAN
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
#else
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
#endif
}

static inline int32_t read_i32_le(const unsigned char *p) {
    return (int32_t)read_u32_le(p);
}

static inline uint64_t read_u64_le(const unsigned char *p) {
    return (uint64_t)read_u32_le(p) | ((uint64_t)read_u32_le(p + 4) << 32);
}

static inline void write_u32_le(unsigned char *p, uint32_t v) {
#if LAYOUT_HOST_IS_LITTLE_ENDIAN
    memcpy(p, &v, sizeof v);
#else
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
#endif
}

static inline void write_u64_le(unsigned char *p, uint64_t v) {
    write_u32_le(p, (uint32_t)v);
    write_u32_le(p + 4, (uint32_t)(v >> 32));
}

#endif
