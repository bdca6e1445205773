/* Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2): seed 0x9747b28c,
 * mixing constant 0x5bd1e995, shift 24, result a signed 32-bit int, exactly as Kafka.
 * One definition, included by the C extensions that hash keys (_murmur2.c, _producer.c).
 */
#ifndef PLINTH_KAFKA_MURMUR2_H
#define PLINTH_KAFKA_MURMUR2_H

#include <stddef.h>
#include <stdint.h>

static inline int32_t kafka_murmur2(const unsigned char *data, ptrdiff_t length) {
    const uint32_t seed = 0x9747b28cU;
    const uint32_t m = 0x5bd1e995U;
    const int r = 24;
    uint32_t h = seed ^ (uint32_t)length;
    ptrdiff_t words = length / 4;
    for (ptrdiff_t i = 0; i < words; i++) {
        const unsigned char *p = data + 4 * i;
        uint32_t k = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                     ((uint32_t)p[3] << 24);
        k *= m;
        k ^= k >> r;
        k *= m;
        h *= m;
        h ^= k;
    }
    const unsigned char *tail = data + 4 * words;
    switch (length % 4) {
        case 3: h ^= (uint32_t)tail[2] << 16; /* fall through */
        case 2: h ^= (uint32_t)tail[1] << 8;  /* fall through */
        case 1: h ^= (uint32_t)tail[0];
                h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return (int32_t)h;
}

#endif
