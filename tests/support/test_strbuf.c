/* test_strbuf.c — the growable string (support/strbuf.h): appends, formatting, ownership,
 * fixed buffers that cut off. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "strbuf.h"

static void test_append_and_take(void **state) {
    StrBuf b = {0};
    assert_true(strbuf_puts(&b, "ab"));
    assert_true(strbuf_putc(&b, 'c'));
    assert_true(strbuf_append(&b, "d\0e", 3));
    assert_true(strbuf_printf(&b, "-%d-%s", 42, "x"));
    assert_int_equal(b.len, 11);
    assert_memory_equal(b.data, "abcd\0e-42-x", 12);
    char *s = strbuf_take(&b);
    assert_non_null(s);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    free(s);
}

static void test_empty_take_is_empty_string(void **state) {
    StrBuf b = {0};
    char *s = strbuf_take(&b);
    assert_string_equal(s, "");
    free(s);
}

static void test_grows_past_first_block(void **state) {
    StrBuf b = {0};
    for (int i = 0; i < 10000; i++) strbuf_printf(&b, "%04d", i % 10000);
    assert_false(b.failed);
    assert_int_equal(b.len, 40000);
    assert_memory_equal(b.data + 4 * 9999, "9999", 5);
    strbuf_clear(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    strbuf_free(&b);
    assert_null(b.data);
}

static void test_reserve(void **state) {
    StrBuf b = {0};
    assert_true(strbuf_reserve(&b, 1000));
    assert_true(b.cap >= 1001);
    assert_false(strbuf_reserve(&b, SIZE_MAX));
    assert_true(b.failed);
    assert_false(strbuf_puts(&b, "x")); /* failed stays failed */
    assert_null(strbuf_take(&b));
}

static void test_fixed_cuts_off(void **state) {
    char out[8];
    StrBuf b;
    strbuf_init_fixed(&b, out, sizeof out);
    assert_string_equal(out, "");
    assert_true(strbuf_puts(&b, "abc"));
    assert_false(strbuf_puts(&b, "defgh"));
    assert_string_equal(out, "abcdefg");
    assert_true(b.failed);
    assert_false(strbuf_puts(&b, "z"));
    assert_string_equal(out, "abcdefg");
    strbuf_clear(&b);
    assert_false(strbuf_printf(&b, "%s", "123456789"));
    assert_string_equal(out, "1234567");
    assert_int_equal(b.len, 7);
    strbuf_free(&b);
    assert_string_equal(out, "");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_and_take),
        cmocka_unit_test(test_empty_take_is_empty_string),
        cmocka_unit_test(test_grows_past_first_block),
        cmocka_unit_test(test_reserve),
        cmocka_unit_test(test_fixed_cuts_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
