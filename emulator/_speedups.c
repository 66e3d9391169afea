/*
 * emulator._speedups: the byte loops every audio event runs, and the Huffman
 * decoding of every stream's request headers, in C.
 *
 * Optional: the package works without it (setup.py builds it as an optional
 * extension), and emulator.speedups chooses this module or the pure-Python
 * twins only after checking that both answer alike. Nothing here keeps state.
 *
 *   crc32(data, value, /) -> int
 *       zlib.crc32(data, value): the CRC-32 of the event-stream frames (the
 *       reflected 0x04C11DB7 polynomial). On x86-64 with PCLMULQDQ, buffers of
 *       64 bytes and more are folded 64 bytes a step, as in Gopal et al., "Fast
 *       CRC Computation for Generic Polynomials Using PCLMULQDQ Instruction"
 *       (Intel, 2009); elsewhere, and for short buffers and tails, a
 *       slicing-by-8 table walk.
 *
 *   sdk_audio_frame(data, /) -> (bytes, bytes) | None
 *       The inner headers block and payload of ``data`` when it is exactly one
 *       signed envelope in the SDK's layout around one message, every length
 *       in bounds and all four CRCs right; else None. The checks of
 *       emulator.eventstream's sdk_audio_event, but for the header lookup.
 *
 *   base64_size(data, /) -> int
 *       The decoded size of ``data`` when it is standard base64 as every
 *       encoder writes it: a length that is a multiple of 4, only
 *       A-Z a-z 0-9 + / and at most two trailing '='. Otherwise -1.
 *
 *   audio_event_size(payload, /) -> int
 *       base64_size of the chunk when ``payload`` is exactly the SDK's
 *       {"audioChunk":"<chunk>"}; otherwise -1.
 *
 *   huffman_decode(data, table, /) -> bytes | int
 *       hpack's decode_huffman (HPACK's Huffman code, RFC 7541 appendix B) on
 *       hpack's own nibble state machine, passed in as ``table``: 4,096
 *       entries of three bytes (next state, flags, byte) as in
 *       hpack.huffman_table.HUFFMAN_TABLE. The decoded bytes, or 1 where hpack
 *       raises "Invalid Huffman string" and 2 for "Incomplete Huffman string".
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SPEEDUPS_PCLMUL 1
#include <emmintrin.h>
#include <wmmintrin.h>
#else
#define SPEEDUPS_PCLMUL 0
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* -- CRC-32: tables ------------------------------------------------------- */

static uint32_t crc_table[8][256];

static void
crc_tables_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        }
        crc_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = crc_table[0][n];
        for (int t = 1; t < 8; t++) {
            c = crc_table[0][c & 0xFF] ^ (c >> 8);
            crc_table[t][n] = c;
        }
    }
}

/* ``state`` is the running register (the CRC inverted), as in zlib's core. */
static uint32_t
crc_tables_update(uint32_t state, const unsigned char *p, size_t n)
{
    while (n >= 8) {
        uint32_t lo = state ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 |
                               (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 |
                      (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
        state = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^
                crc_table[5][(lo >> 16) & 0xFF] ^ crc_table[4][lo >> 24] ^
                crc_table[3][hi & 0xFF] ^ crc_table[2][(hi >> 8) & 0xFF] ^
                crc_table[1][(hi >> 16) & 0xFF] ^ crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) {
        state = crc_table[0][(state ^ *p++) & 0xFF] ^ (state >> 8);
    }
    return state;
}

/* -- CRC-32: carry-less multiplication ------------------------------------ */

#if SPEEDUPS_PCLMUL
static int have_pclmul;

/*
 * The fold constants of the paper for the bit-reflected polynomial, each
 * x^k mod P(x) reflected and shifted left by one: k1/k2 fold 512 bits ahead
 * (four lanes), k3/k4 fold 128 bits, k5 folds 96 bits to 64, and the last pair
 * is P(x) itself and the Barrett constant floor(x^64 / P(x)).
 */
static const uint64_t FOLD_512[2] __attribute__((aligned(16))) = {0x0154442bd4, 0x01c6e41596};
static const uint64_t FOLD_128[2] __attribute__((aligned(16))) = {0x01751997d0, 0x00ccaa009e};
static const uint64_t FOLD_64[2] __attribute__((aligned(16))) = {0x0163cd6124, 0};
static const uint64_t BARRETT[2] __attribute__((aligned(16))) = {0x01db710641, 0x01f7011641};

/* One lane folded ahead by ``k`` and the next 16 bytes added. */
__attribute__((target("pclmul,sse2"))) static inline __m128i
fold(__m128i lane, __m128i k, __m128i next)
{
    __m128i low = _mm_clmulepi64_si128(lane, k, 0x00);
    __m128i high = _mm_clmulepi64_si128(lane, k, 0x11);
    return _mm_xor_si128(_mm_xor_si128(low, high), next);
}

/* The register after ``n`` bytes, ``n`` >= 64 and a multiple of 16. */
__attribute__((target("pclmul,sse2"))) static uint32_t
crc_pclmul_update(uint32_t state, const unsigned char *p, size_t n)
{
    const __m128i *v = (const __m128i *)p;
    __m128i x1 = _mm_xor_si128(_mm_loadu_si128(v), _mm_cvtsi32_si128((int)state));
    __m128i x2 = _mm_loadu_si128(v + 1);
    __m128i x3 = _mm_loadu_si128(v + 2);
    __m128i x4 = _mm_loadu_si128(v + 3);
    v += 4;
    n -= 64;

    __m128i k = _mm_load_si128((const __m128i *)FOLD_512);
    while (n >= 64) {
        x1 = fold(x1, k, _mm_loadu_si128(v));
        x2 = fold(x2, k, _mm_loadu_si128(v + 1));
        x3 = fold(x3, k, _mm_loadu_si128(v + 2));
        x4 = fold(x4, k, _mm_loadu_si128(v + 3));
        v += 4;
        n -= 64;
    }

    /* Four lanes into one, then the remaining 16-byte blocks. */
    k = _mm_load_si128((const __m128i *)FOLD_128);
    x1 = fold(x1, k, x2);
    x1 = fold(x1, k, x3);
    x1 = fold(x1, k, x4);
    while (n >= 16) {
        x1 = fold(x1, k, _mm_loadu_si128(v));
        v += 1;
        n -= 16;
    }

    /* 128 bits to 64: the low half times k4 (the high constant) plus the high half. */
    const __m128i low32 = _mm_setr_epi32(-1, 0, -1, 0);
    __m128i t = _mm_clmulepi64_si128(x1, k, 0x10);
    x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), t);
    /* 96 bits to 64 with k5. */
    k = _mm_loadl_epi64((const __m128i *)FOLD_64);
    t = _mm_srli_si128(x1, 4);
    x1 = _mm_clmulepi64_si128(_mm_and_si128(x1, low32), k, 0x00);
    x1 = _mm_xor_si128(x1, t);

    /* Barrett reduction to 32 bits. */
    k = _mm_load_si128((const __m128i *)BARRETT);
    t = _mm_and_si128(x1, low32);
    t = _mm_clmulepi64_si128(t, k, 0x10);
    t = _mm_and_si128(t, low32);
    t = _mm_clmulepi64_si128(t, k, 0x00);
    x1 = _mm_xor_si128(x1, t);
    return (uint32_t)_mm_cvtsi128_si32(_mm_srli_si128(x1, 4));
}
#endif

static uint32_t
crc32_update(uint32_t crc, const unsigned char *p, size_t n)
{
    uint32_t state = ~crc;
#if SPEEDUPS_PCLMUL
    if (have_pclmul && n >= 64) {
        size_t body = n & ~(size_t)15;
        state = crc_pclmul_update(state, p, body);
        p += body;
        n -= body;
    }
#endif
    return ~crc_tables_update(state, p, n);
}

/* -- base64 ---------------------------------------------------------------- */

/* 1 for the 64 characters of the standard alphabet, 0 for every other byte. */
static unsigned char base64_alphabet[256];

static void
base64_init(void)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    memset(base64_alphabet, 0, sizeof base64_alphabet);
    for (const char *c = alphabet; *c; c++) {
        base64_alphabet[(unsigned char)*c] = 1;
    }
}

static Py_ssize_t
base64_decoded_size(const unsigned char *p, Py_ssize_t n)
{
    if (n % 4) {
        return -1;
    }
    Py_ssize_t padding = 0;
    while (padding < n && p[n - 1 - padding] == '=') {
        padding++;
    }
    if (padding > 2) {
        return -1;
    }
    /* Every byte is looked at: the checks are ANDed, never cut short. */
    Py_ssize_t body = n - padding, i = 0;
    unsigned int ok = 1;
#if defined(__SSE2__)
    /* 16 bytes a step. A letter, lower-cased with | 0x20, is 'a' + 0..25; a
     * digit is '0' + 0..9 (a saturating subtraction is 0 exactly when in range);
     * '+' and '/' are the two bytes that | 4 makes '/'. */
    const __m128i lower_a = _mm_set1_epi8('a'), digit_0 = _mm_set1_epi8('0');
    const __m128i letters = _mm_set1_epi8(25), digits = _mm_set1_epi8(9);
    const __m128i case_bit = _mm_set1_epi8(0x20), four = _mm_set1_epi8(4);
    const __m128i slash = _mm_set1_epi8('/'), zero = _mm_setzero_si128();
    __m128i all = _mm_cmpeq_epi8(zero, zero);
    for (; i + 16 <= body; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(p + i));
        __m128i letter = _mm_cmpeq_epi8(
            _mm_subs_epu8(_mm_sub_epi8(_mm_or_si128(x, case_bit), lower_a), letters), zero);
        __m128i digit = _mm_cmpeq_epi8(_mm_subs_epu8(_mm_sub_epi8(x, digit_0), digits), zero);
        __m128i sign = _mm_cmpeq_epi8(_mm_or_si128(x, four), slash);
        all = _mm_and_si128(all, _mm_or_si128(_mm_or_si128(letter, digit), sign));
    }
    ok = _mm_movemask_epi8(all) == 0xFFFF;
#endif
    for (; i < body; i++) {
        ok &= base64_alphabet[p[i]];
    }
    return ok ? n / 4 * 3 - padding : -1;
}

/* -- event-stream messages ------------------------------------------------- */

static uint32_t
read_u32be(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* The prelude (total_length, headers_length, prelude_crc) is 12 bytes and the
 * smallest message, with no headers and no payload, 16. */
#define PRELUDE_LENGTH 12
#define MIN_MESSAGE_LENGTH 16

/*
 * The envelope the SDK writes around every input event: its prelude, then
 * exactly two headers, :date (a timestamp) and :chunk-signature (32 bytes),
 * then the inner message as its payload. As in emulator/eventstream.py:
 * _ENVELOPE_DATE, _ENVELOPE_SIGNATURE and the limits.
 */
static const unsigned char ENVELOPE_DATE[7] = "\x05:date\x08";
static const unsigned char ENVELOPE_SIGNATURE[20] = "\x10:chunk-signature\x06\x00\x20";
#define ENVELOPE_HEADERS_LENGTH (7 + 8 + 20 + 32)
#define SDK_INNER_AT (PRELUDE_LENGTH + ENVELOPE_HEADERS_LENGTH)
#define MESSAGE_CRC_LENGTH 4
#define MAX_PAYLOAD_LENGTH (24 * 1024 * 1024)
#define MAX_HEADERS_LENGTH (128 * 1024)
/* The :date values a datetime holds: years 1 to 9999, in ms from the epoch. */
#define MIN_MILLIS (-62135596800000LL)
#define MAX_MILLIS 253402300799999LL

/* Where the inner message's headers block and payload lie, if ``p`` is exactly
 * one such envelope, both CRCs right, around one message with both its CRCs
 * right; else 0. */
static int
sdk_frame_find(const unsigned char *p, size_t size, size_t *block_at, size_t *payload_at)
{
    if (size < 2 * MIN_MESSAGE_LENGTH + ENVELOPE_HEADERS_LENGTH) {
        return 0;
    }
    if (read_u32be(p) != size || read_u32be(p + 4) != ENVELOPE_HEADERS_LENGTH ||
        memcmp(p + PRELUDE_LENGTH, ENVELOPE_DATE, sizeof ENVELOPE_DATE) != 0 ||
        memcmp(p + PRELUDE_LENGTH + 15, ENVELOPE_SIGNATURE, sizeof ENVELOPE_SIGNATURE) != 0) {
        return 0;
    }
    int64_t millis = (int64_t)((uint64_t)read_u32be(p + 19) << 32 | read_u32be(p + 23));
    if (millis < MIN_MILLIS || millis > MAX_MILLIS) {
        return 0;
    }
    const unsigned char *inner = p + SDK_INNER_AT;
    size_t inner_length = size - SDK_INNER_AT - MESSAGE_CRC_LENGTH;
    uint32_t inner_headers_length = read_u32be(inner + 4);
    if (read_u32be(inner) != inner_length || inner_length > MAX_PAYLOAD_LENGTH ||
        inner_headers_length > inner_length - MIN_MESSAGE_LENGTH ||
        inner_headers_length > MAX_HEADERS_LENGTH) {
        return 0;
    }
    /* Each message's prelude CRC, then its message CRC going on from it. */
    uint32_t crc = crc32_update(0, p, 8);
    uint32_t inner_crc = crc32_update(0, inner, 8);
    if (crc != read_u32be(p + 8) || inner_crc != read_u32be(inner + 8)) {
        return 0;
    }
    inner_crc = crc32_update(inner_crc, inner + 8, inner_length - 12);
    if (inner_crc != read_u32be(inner + inner_length - 4)) {
        return 0;
    }
    crc = crc32_update(crc, p + 8, size - 12);
    if (crc != read_u32be(p + size - 4)) {
        return 0;
    }
    *block_at = SDK_INNER_AT + PRELUDE_LENGTH;
    *payload_at = *block_at + inner_headers_length;
    return 1;
}

/* -- audioEvent payloads --------------------------------------------------- */

/* The exact bytes the SDK's JSON codec writes around an audioEvent's chunk. */
static const char AUDIO_PREFIX[] = "{\"audioChunk\":\"";
static const char AUDIO_SUFFIX[] = "\"}";
#define AUDIO_PREFIX_LENGTH (sizeof AUDIO_PREFIX - 1)
#define AUDIO_SUFFIX_LENGTH (sizeof AUDIO_SUFFIX - 1)

static Py_ssize_t
audio_event_size(const unsigned char *p, Py_ssize_t n)
{
    if (n < (Py_ssize_t)(AUDIO_PREFIX_LENGTH + AUDIO_SUFFIX_LENGTH) ||
        memcmp(p, AUDIO_PREFIX, AUDIO_PREFIX_LENGTH) != 0 ||
        memcmp(p + n - AUDIO_SUFFIX_LENGTH, AUDIO_SUFFIX, AUDIO_SUFFIX_LENGTH) != 0) {
        return -1;
    }
    return base64_decoded_size(p + AUDIO_PREFIX_LENGTH,
                               n - (Py_ssize_t)(AUDIO_PREFIX_LENGTH + AUDIO_SUFFIX_LENGTH));
}

/* -- Python glue ----------------------------------------------------------- */

/* A CRC over fewer bytes than this is over before another thread could run. */
#define RELEASE_GIL_FROM (1 << 20)

static PyObject *
speedups_crc32(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "crc32() takes 2 positional arguments (%zd given)", nargs);
        return NULL;
    }
    unsigned long value = PyLong_AsUnsignedLongMask(args[1]);
    if (value == (unsigned long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    uint32_t crc;
    if (view.len >= RELEASE_GIL_FROM) {
        Py_BEGIN_ALLOW_THREADS
        crc = crc32_update((uint32_t)value, view.buf, (size_t)view.len);
        Py_END_ALLOW_THREADS
    }
    else {
        crc = crc32_update((uint32_t)value, view.buf, (size_t)view.len);
    }
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(crc);
}

/* measure(bytes of arg) as a Python int: the glue of the size functions. */
static PyObject *
measure_buffer(PyObject *arg, Py_ssize_t (*measure)(const unsigned char *, Py_ssize_t))
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    Py_ssize_t size = measure(view.buf, view.len);
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(size);
}

static PyObject *
speedups_base64_size(PyObject *Py_UNUSED(module), PyObject *arg)
{
    return measure_buffer(arg, base64_decoded_size);
}

static PyObject *
speedups_sdk_audio_frame(PyObject *Py_UNUSED(module), PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *p = view.buf;
    size_t size = (size_t)view.len, block_at, payload_at;
    PyObject *found;
    if (sdk_frame_find(p, size, &block_at, &payload_at)) {
        size_t payload_end = size - 2 * MESSAGE_CRC_LENGTH;
        found = Py_BuildValue("(y#y#)", p + block_at, (Py_ssize_t)(payload_at - block_at),
                              p + payload_at, (Py_ssize_t)(payload_end - payload_at));
    }
    else {
        found = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&view);
    return found;
}

static PyObject *
speedups_audio_event_size(PyObject *Py_UNUSED(module), PyObject *arg)
{
    return measure_buffer(arg, audio_event_size);
}

/* -- HPACK Huffman strings ---------------------------------------------------- */

/* hpack.huffman_table's flags. */
#define HUFFMAN_COMPLETE 1
#define HUFFMAN_EMIT_SYMBOL 2
#define HUFFMAN_FAIL 4
#define HUFFMAN_TABLE_SIZE (256 * 16 * 3)

static PyObject *
speedups_huffman_decode(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "huffman_decode() takes 2 positional arguments (%zd given)",
                     nargs);
        return NULL;
    }
    Py_buffer data, table;
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &table, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    PyObject *result = NULL;
    if (table.len != HUFFMAN_TABLE_SIZE) {
        PyErr_Format(PyExc_ValueError, "huffman_decode(): the table must be %d bytes, not %zd",
                     HUFFMAN_TABLE_SIZE, table.len);
        goto done;
    }
    if (data.len == 0) {
        result = PyBytes_FromStringAndSize(NULL, 0);
        goto done;
    }
    /* The shortest code is 5 bits: at most 8 symbols per 5 bytes, and one a nibble. */
    Py_ssize_t room = data.len * 2;
    result = PyBytes_FromStringAndSize(NULL, room);
    if (result == NULL) {
        goto done;
    }
    const unsigned char *in = data.buf, *t = table.buf;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    Py_ssize_t n = 0;
    unsigned int state = 0, flags = 0;
    for (Py_ssize_t i = 0; i < data.len; i++) {
        unsigned int nibbles[2] = {in[i] >> 4, in[i] & 0x0F};
        for (int k = 0; k < 2; k++) {
            const unsigned char *entry = t + 3 * (state * 16 + nibbles[k]);
            state = entry[0];
            flags = entry[1];
            if (flags & HUFFMAN_FAIL) {
                Py_SETREF(result, PyLong_FromLong(1));
                goto done;
            }
            if (flags & HUFFMAN_EMIT_SYMBOL) {
                out[n++] = entry[2];
            }
        }
    }
    if (!(flags & HUFFMAN_COMPLETE)) {
        Py_SETREF(result, PyLong_FromLong(2));
        goto done;
    }
    _PyBytes_Resize(&result, n);
done:
    PyBuffer_Release(&table);
    PyBuffer_Release(&data);
    return result;
}

static PyObject *
speedups_crc32_accelerated(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
#if SPEEDUPS_PCLMUL
    return PyBool_FromLong(have_pclmul);
#else
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef speedups_methods[] = {
    {"crc32", (PyCFunction)(void (*)(void))speedups_crc32, METH_FASTCALL,
     "crc32(data, value, /)\n--\n\nzlib.crc32(data, value): CRC-32 of data, "
     "continuing from value."},
    {"base64_size", speedups_base64_size, METH_O,
     "base64_size(data, /)\n--\n\nDecoded size of data if it is standard padded base64 "
     "(length a multiple of 4, the 64-character alphabet, at most two trailing '='), "
     "else -1."},
    {"sdk_audio_frame", speedups_sdk_audio_frame, METH_O,
     "sdk_audio_frame(data, /)\n--\n\n(inner headers block, inner payload) if data is "
     "exactly one signed envelope in the SDK's layout (:date, :chunk-signature), all "
     "four CRCs right, around one message; else None."},
    {"audio_event_size", speedups_audio_event_size, METH_O,
     "audio_event_size(payload, /)\n--\n\nbase64_size of the chunk if payload is "
     "exactly {\"audioChunk\":\"<chunk>\"}, else -1."},
    {"huffman_decode", (PyCFunction)(void (*)(void))speedups_huffman_decode, METH_FASTCALL,
     "huffman_decode(data, table, /)\n--\n\nhpack's decode_huffman on hpack's nibble state "
     "machine (table: 4,096 entries of next state, flags, byte): the decoded bytes, or 1 "
     "(an invalid string) or 2 (an incomplete one)."},
    {"crc32_accelerated", speedups_crc32_accelerated, METH_NOARGS,
     "crc32_accelerated()\n--\n\nWhether crc32 folds with PCLMULQDQ on this CPU."},
    {NULL, NULL, 0, NULL},
};

static int
speedups_exec(PyObject *Py_UNUSED(module))
{
    /* Once per process: a second exec (a re-import) must not rewrite the
       tables under a CRC that runs with the GIL released. */
    static int initialised = 0;
    if (initialised) {
        return 0;
    }
    crc_tables_init();
    base64_init();
#if SPEEDUPS_PCLMUL
    __builtin_cpu_init();
    have_pclmul = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse2");
    if (getenv("MEDSCRIBE_NO_PCLMUL") != NULL) {
        have_pclmul = 0; /* for tests of the table walk on CPUs that have it */
    }
#endif
    initialised = 1;
    return 0;
}

static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, speedups_exec},
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "emulator._speedups",
    .m_doc = "CRC-32 and the base64 alphabet check of the audio-event path, in C.",
    .m_size = 0,
    .m_methods = speedups_methods,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
