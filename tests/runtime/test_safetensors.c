/* test_safetensors.c — the safetensors reader and writer (runtime/safetensors.[ch]).
 *
 * Round trips through a real file (every dtype, rank 0, empty tensors, metadata), the golden
 * files written by tests/golden/make_golden.py, and one test per malformed input: each must
 * be rejected with a message that names the file (and the tensor, where there is one).
 * Malformed files are built in memory from header text, so each case shows exactly what is
 * wrong with it.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "safetensors.h"

static const char *source_dir(void) {
    const char *s = getenv("CAPC_SOURCE_DIR");
    return s && *s ? s : ".";
}

/* A temporary path unique to this process. */
static void temp_path(char *buf, size_t size, const char *stem) {
    const char *dir = getenv("TMPDIR");
    snprintf(buf, size, "%s/capc_st_%ld_%s.safetensors", dir && *dir ? dir : "/tmp",
             (long)getpid(), stem);
}

/* ---- building files in memory ----------------------------------------------------------- */

/* 8-byte LE length + header text + data_len bytes (0, 1, 2, ...). malloc'd; *size set. */
static uint8_t *make_file(const char *header, size_t data_len, size_t *size) {
    size_t h = strlen(header);
    *size = 8 + h + data_len;
    uint8_t *buf = malloc(*size + 1);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, header, h);
    for (size_t i = 0; i < data_len; i++) buf[8 + h + i] = (uint8_t)i;
    return buf;
}

/* Parses header + data_len bytes; expects failure with every `want` substring in the message. */
static void expect_reject(const char *header, size_t data_len, const char *want1,
                          const char *want2) {
    size_t size;
    uint8_t *buf = make_file(header, data_len, &size);
    StFile f;
    char err[1024] = "";
    int rc = st_parse(buf, size, "bad.safetensors", &f, err, sizeof err);
    if (rc == 0 || strstr(err, "bad.safetensors: ") != err || !strstr(err, want1) ||
        (want2 && !strstr(err, want2)))
        print_error("header %s\n  rc=%d message \"%s\"\n  wanted \"%s\"%s%s\n", header, rc, err,
                    want1, want2 ? " and " : "", want2 ? want2 : "");
    if (rc == 0) st_free(&f);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err, want1));
    if (want2) assert_non_null(strstr(err, want2));
    assert_ptr_equal(strstr(err, "bad.safetensors: "), err);
}

static void expect_accept(const char *header, size_t data_len, int n_tensors) {
    size_t size;
    uint8_t *buf = make_file(header, data_len, &size);
    StFile f;
    char err[1024] = "";
    int rc = st_parse(buf, size, "ok.safetensors", &f, err, sizeof err);
    if (rc != 0) print_error("%s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(f.n, n_tensors);
    st_free(&f);
}

/* ---- round trip ---------------------------------------------------------------------------- */

static void test_round_trip_every_dtype(void **state) {
    (void)state;
    /* Values every dtype holds exactly. */
    const double vals[6] = {0, 1, 2, 3, 100, 127};
    const double fvals[6] = {-1.5, 0.25, 3.0, -0.0, 65504.0, 1.0 / 1024};
    const double bools[6] = {0, 1, 1, 0, 1, 0};
    StWriteTensor ts[ST_DTYPE_COUNT + 2];
    uint8_t bytes[ST_DTYPE_COUNT][6 * 8];
    char names[ST_DTYPE_COUNT][16];
    int64_t shape[2] = {2, 3};
    for (int d = 0; d < ST_DTYPE_COUNT; d++) {
        bool is_float = d == ST_F16 || d == ST_BF16 || d == ST_F32 || d == ST_F64;
        const double *src = is_float ? fvals : vals;
        if (d == ST_BOOL) src = bools;
        /* BF16 has 8 mantissa bits: 65504 is not exact there; use 256. */
        double tmp[6];
        memcpy(tmp, src, sizeof tmp);
        if (d == ST_BF16) tmp[4] = 256.0;
        st_from_f64((StDType)d, tmp, 6, bytes[d]);
        snprintf(names[d], sizeof names[d], "t.%s", st_dtype_name((StDType)d));
        ts[d] = (StWriteTensor){names[d], (StDType)d, 2, shape, bytes[d]};
    }
    double scalar = 6.9691887917448163;
    ts[ST_DTYPE_COUNT] = (StWriteTensor){"scalar", ST_F64, 0, NULL, &scalar};
    int64_t empty_shape[2] = {0, 5};
    ts[ST_DTYPE_COUNT + 1] = (StWriteTensor){"empty", ST_F32, 2, empty_shape, ""};

    char path[512], err[1024] = "";
    temp_path(path, sizeof path, "roundtrip");
    const char *keys[2] = {"model", "quote"}, *values[2] = {"captioner_tiny", "a \"b\"\n"};
    int rc = st_write_file(path, ts, ST_DTYPE_COUNT + 2, keys, values, 2, err, sizeof err);
    if (rc != 0) print_error("%s\n", err);
    assert_int_equal(rc, 0);

    StFile f;
    rc = st_read_file(path, &f, err, sizeof err);
    if (rc != 0) print_error("%s\n", err);
    assert_int_equal(rc, 0);
    unlink(path);
    assert_int_equal(f.n, ST_DTYPE_COUNT + 2);
    assert_string_equal(st_metadata(&f, "model"), "captioner_tiny");
    assert_string_equal(st_metadata(&f, "quote"), "a \"b\"\n");
    assert_null(st_metadata(&f, "missing"));
    for (int d = 0; d < ST_DTYPE_COUNT; d++) {
        const StTensor *t = &f.tensors[d]; /* header order is the order given */
        assert_string_equal(t->name, names[d]);
        assert_int_equal(t->dtype, d);
        assert_int_equal(t->rank, 2);
        assert_int_equal(t->shape[1], 3);
        assert_memory_equal(t->data, bytes[d], 6 * (size_t)st_dtype_size((StDType)d));
        double back[6];
        st_to_f64(t, back);
        double again[6 * 8];
        st_from_f64((StDType)d, back, 6, again);
        assert_memory_equal(again, bytes[d], 6 * (size_t)st_dtype_size((StDType)d));
    }
    const StTensor *s = st_find(&f, "scalar");
    assert_non_null(s);
    assert_int_equal(s->rank, 0);
    assert_int_equal(s->numel, 1);
    double got;
    st_to_f64(s, &got);
    assert_true(got == scalar);
    const StTensor *e = st_find(&f, "empty");
    assert_int_equal(e->numel, 0);
    assert_int_equal(e->nbytes, 0);
    st_free(&f);
}

/* The header is padded to a multiple of 8 so the data starts 8-aligned in the file. */
static void test_header_padding(void **state) {
    (void)state;
    float x = 1.0f;
    int64_t shape[1] = {1};
    StWriteTensor t = {"abc", ST_F32, 1, shape, &x};
    char path[512], err[1024];
    temp_path(path, sizeof path, "padding");
    assert_int_equal(st_write_file(path, &t, 1, NULL, NULL, 0, err, sizeof err), 0);
    StFile f;
    assert_int_equal(st_read_file(path, &f, err, sizeof err), 0);
    unlink(path);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | f.buf[i];
    assert_int_equal(n % 8, 0);
    assert_int_equal(f.size, 8 + n + 4);
    st_free(&f);
}

/* F16 and BF16 conversions: exact values, rounding to nearest even, overflow, subnormals. */
static void test_half_conversions(void **state) {
    (void)state;
    const struct {
        StDType dt;
        double in;
        uint16_t bits;
    } cases[] = {
        {ST_F16, 1.0, 0x3c00},          {ST_F16, -2.0, 0xc000},
        {ST_F16, 65504.0, 0x7bff},      {ST_F16, 65520.0, 0x7c00}, /* halfway: to inf */
        {ST_F16, 0x1p-24, 0x0001},      {ST_F16, 0x1p-14, 0x0400},
        {ST_F16, 1.0 + 0x1p-11, 0x3c00}, /* tie to even */
        {ST_F16, 1.0 + 3 * 0x1p-11, 0x3c02},
        {ST_F16, INFINITY, 0x7c00},     {ST_F16, -0.0, 0x8000},
        {ST_BF16, 1.0, 0x3f80},         {ST_BF16, -3.0, 0xc040},
        {ST_BF16, 1.0 + 0x1p-8, 0x3f80}, {ST_BF16, 0x1p-133, 0x0001},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t b[2];
        st_from_f64(cases[i].dt, &cases[i].in, 1, b);
        uint16_t got = (uint16_t)(b[0] | b[1] << 8);
        if (got != cases[i].bits)
            print_error("%s(%a) = 0x%04x, want 0x%04x\n", st_dtype_name(cases[i].dt),
                        cases[i].in, got, cases[i].bits);
        assert_int_equal(got, cases[i].bits);
    }
    uint8_t nan[2];
    double n = NAN, back;
    st_from_f64(ST_F16, &n, 1, nan);
    StTensor t = {.dtype = ST_F16, .numel = 1, .data = nan};
    st_to_f64(&t, &back);
    assert_true(isnan(back));
}

/* The golden files from make_golden.py read back with the expected contents. */
static void test_golden_files(void **state) {
    (void)state;
    char path[1024], err[1024];
    snprintf(path, sizeof path, "%s/tests/golden/tiny_weights.safetensors", source_dir());
    StFile f;
    int rc = st_read_file(path, &f, err, sizeof err);
    if (rc != 0) print_error("%s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(f.n, 116);
    assert_string_equal(st_metadata(&f, "model"), "captioner_tiny");
    int64_t values = 0;
    for (int i = 0; i < f.n; i++) {
        assert_int_equal(f.tensors[i].dtype, ST_F32);
        values += f.tensors[i].numel;
    }
    assert_int_equal(values, 508016);
    st_free(&f);

    snprintf(path, sizeof path, "%s/tests/golden/tiny_expected.safetensors", source_dir());
    assert_int_equal(st_read_file(path, &f, err, sizeof err), 0);
    const StTensor *loss = st_find(&f, "loss_eval");
    assert_non_null(loss);
    assert_int_equal(loss->dtype, ST_F64);
    assert_int_equal(loss->rank, 0);
    double v;
    st_to_f64(loss, &v);
    assert_true(fabs(v - 6.7813611325330792) < 1e-15);
    st_free(&f);
}

static void test_missing_file(void **state) {
    (void)state;
    StFile f;
    char err[1024];
    assert_int_equal(st_read_file("/nonexistent/x.safetensors", &f, err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/x.safetensors: cannot open"));
}

/* The writer refuses bad arguments and leaves no file; a failed write leaves no temp file. */
static void test_writer_rejects(void **state) {
    (void)state;
    float x[2] = {1, 2};
    int64_t shape[1] = {1};
    StWriteTensor dup[2] = {{"a", ST_F32, 1, shape, x}, {"a", ST_F32, 1, shape, x + 1}};
    char path[512], err[1024];
    temp_path(path, sizeof path, "rejects");
    assert_int_equal(st_write_file(path, dup, 2, NULL, NULL, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "tensor 'a' given twice"));
    assert_int_equal(access(path, F_OK), -1);
    StWriteTensor meta = {"__metadata__", ST_F32, 1, shape, x};
    assert_int_equal(st_write_file(path, &meta, 1, NULL, NULL, 0, err, sizeof err), -1);
    assert_int_equal(st_write_file("/nonexistent/dir/x.safetensors", dup, 1, NULL, NULL, 0, err,
                                   sizeof err),
                     -1);
    assert_non_null(strstr(err, "/nonexistent/dir/x.safetensors: cannot create"));
}

/* ---- malformed inputs ---------------------------------------------------------------------- */

#define T1 "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"

static void test_accepts_minimal(void **state) {
    (void)state;
    expect_accept("{}", 0, 0);
    expect_accept("{" T1 "}", 8, 1);
    expect_accept("{" T1 "}    ", 8, 1); /* space padding */
    expect_accept("{\"__metadata__\":{\"a\":\"b\"}," T1 "}", 8, 1);
    /* Tensors need not be listed in offset order. */
    expect_accept("{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]},"
                  "\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}",
                  4, 2);
}

static void test_not_safetensors(void **state) {
    (void)state;
    /* A PNG's first bytes: the "length" is absurd. */
    const uint8_t png[16] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I'};
    StFile f;
    char err[1024];
    uint8_t *buf = malloc(sizeof png);
    memcpy(buf, png, sizeof png);
    assert_int_equal(st_parse(buf, sizeof png, "bad.safetensors", &f, err, sizeof err), -1);
    assert_non_null(strstr(err, "bad.safetensors: header length"));
    assert_non_null(strstr(err, "exceeds the limit"));
    /* Too short for even the length. */
    buf = malloc(4);
    memcpy(buf, "abcd", 4);
    assert_int_equal(st_parse(buf, 4, "bad.safetensors", &f, err, sizeof err), -1);
    assert_non_null(strstr(err, "too short"));
    /* Plausible length, but not JSON. */
    expect_reject("[1,2,3]", 0, "does not start with '{'", NULL);
    expect_reject("{\"w\": oops}", 0, "not valid JSON", NULL);
    expect_reject("{} trailing", 0, "text after its JSON object", NULL);
}

static void test_header_too_large(void **state) {
    (void)state;
    uint8_t *buf = calloc(1, 16);
    uint64_t n = ST_MAX_HEADER + 1;
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(n >> (8 * i));
    StFile f;
    char err[1024];
    assert_int_equal(st_parse(buf, 16, "bad.safetensors", &f, err, sizeof err), -1);
    assert_non_null(strstr(err, "header length 100000001 exceeds the limit of 100000000"));
}

static void test_truncated(void **state) {
    (void)state;
    /* Header length past the end of the file. */
    size_t size;
    uint8_t *buf = make_file("{" T1 "}", 8, &size);
    StFile f;
    char err[1024];
    assert_int_equal(st_parse(buf, 20, "bad.safetensors", &f, err, sizeof err), -1);
    assert_non_null(strstr(err, "runs past the end of the file (20 bytes): truncated?"));
    /* Data cut short. */
    expect_reject("{" T1 "}", 5, "tensor 'w': data_offsets [0, 8] run past the end",
                  "truncated?");
}

static void test_overlapping_offsets(void **state) {
    (void)state;
    expect_reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                  12, "tensor 'b': data_offsets overlap tensor 'a'", NULL);
    expect_reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                  8, "overlap", NULL);
    expect_reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
                  "tensor 'a': data_offsets leave a gap of 4 bytes", NULL);
    expect_reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8,
                  "tensor 'a': data_offsets must be [begin, end]", NULL);
}

static void test_wrong_dtype(void **state) {
    (void)state;
    expect_reject("{\"w\":{\"dtype\":\"F31\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                  "tensor 'w': unknown dtype 'F31'", NULL);
    expect_reject("{\"w\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                  "tensor 'w': unknown dtype (not a string)", NULL);
    expect_reject("{\"w\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                  "unknown dtype 'f32'", NULL);
}

static void test_wrong_shape_or_length(void **state) {
    (void)state;
    expect_reject("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
                  "tensor 'w': F32 shape of 3 elements needs 12 bytes, data_offsets give 8",
                  NULL);
    expect_reject("{\"w\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,4]}}", 4,
                  "needs 8 bytes", NULL);
    expect_reject("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,8]}}", 8,
                  "tensor 'w': shape entry 0 is not a non-negative integer", NULL);
    expect_reject("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,8]}}", 8,
                  "shape entry 0", NULL);
    expect_reject("{\"w\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8,
                  "tensor 'w': shape is not an array", NULL);
    expect_reject("{\"w\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,4294967296],"
                  "\"data_offsets\":[0,8]}}",
                  8, "absurdly large", NULL);
    expect_reject("{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                  "\"data_offsets\":[0,1]}}",
                  1, "rank 9 exceeds 8", NULL);
}

static void test_trailing_bytes(void **state) {
    (void)state;
    expect_reject("{" T1 "}", 9, "1 trailing bytes after the last tensor", NULL);
    expect_reject("{}", 3, "3 trailing bytes", NULL);
}

static void test_bad_entries(void **state) {
    (void)state;
    expect_reject("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8,
                  "tensor 'w': missing 'data_offsets'", NULL);
    expect_reject("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8,
                  "tensor 'w': unknown key 'x'", NULL);
    expect_reject("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],"
                  "\"data_offsets\":[0,8]}}",
                  8, "tensor 'w': duplicate key 'dtype'", NULL);
    expect_reject("{" T1 "," T1 "}", 8, "tensor 'w' appears twice", NULL);
    expect_reject("{\"w\":[1]}", 0, "tensor 'w': entry is not an object", NULL);
    expect_reject("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8,
                  "data_offsets must be", NULL);
    expect_reject("{\"__metadata__\":{\"a\":1}}", 0, "__metadata__ value of 'a' is not a string",
                  NULL);
    expect_reject("{\"__metadata__\":[]}", 0, "__metadata__ is not an object", NULL);
    expect_reject("{\"\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0,
                  "empty tensor name", NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_dtype),
        cmocka_unit_test(test_header_padding),
        cmocka_unit_test(test_half_conversions),
        cmocka_unit_test(test_golden_files),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_writer_rejects),
        cmocka_unit_test(test_accepts_minimal),
        cmocka_unit_test(test_not_safetensors),
        cmocka_unit_test(test_header_too_large),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_overlapping_offsets),
        cmocka_unit_test(test_wrong_dtype),
        cmocka_unit_test(test_wrong_shape_or_length),
        cmocka_unit_test(test_trailing_bytes),
        cmocka_unit_test(test_bad_entries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
