/* test_files.c — support/files.h: mkdir -p and reading a whole file. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "files.h"

static char tmp[] = "/tmp/capc-test-files-XXXXXX";

static int make_tmp(void **state) { return mkdtemp(tmp) ? 0 : -1; }

static int remove_tmp(void **state) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_make_dirs_nested_and_existing(void **state) {
    char dir[256], failed[256];
    snprintf(dir, sizeof dir, "%s/a/b/c", tmp);
    assert_int_equal(file_make_dirs(dir, failed, sizeof failed), 0);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(file_make_dirs(dir, failed, sizeof failed), 0); /* already there */
    assert_int_equal(file_make_dirs("", failed, sizeof failed), ENOENT);
}

static void test_make_dirs_file_in_the_way(void **state) {
    char file[256], dir[300], failed[300];
    snprintf(file, sizeof file, "%s/plain", tmp);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(file_make_dirs(file, failed, sizeof failed), ENOTDIR);
    assert_string_equal(failed, file);
    snprintf(dir, sizeof dir, "%s/sub", file);
    assert_int_equal(file_make_dirs(dir, failed, sizeof failed), ENOTDIR);
    assert_string_equal(failed, dir);
}

static void test_read_all(void **state) {
    char path[256];
    snprintf(path, sizeof path, "%s/data", tmp);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (int i = 0; i < 200000; i++) fputc(i % 251, f); /* several read blocks */
    fclose(f);
    char *data;
    size_t size;
    assert_int_equal(file_read_all(path, &data, &size), FILE_READ_OK);
    assert_int_equal(size, 200000);
    for (int i = 0; i < 200000; i += 997) assert_int_equal((unsigned char)data[i], i % 251);
    assert_int_equal(data[size], 0);
    free(data);

    f = fopen(path, "wb"); /* empty */
    fclose(f);
    assert_int_equal(file_read_all(path, &data, &size), FILE_READ_OK);
    assert_int_equal(size, 0);
    assert_string_equal(data, "");
    free(data);

    snprintf(path, sizeof path, "%s/missing", tmp);
    assert_int_equal(file_read_all(path, &data, &size), FILE_READ_CANNOT_OPEN);
    assert_int_equal(errno, ENOENT);
    assert_null(data);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_make_dirs_nested_and_existing),
        cmocka_unit_test(test_make_dirs_file_in_the_way),
        cmocka_unit_test(test_read_all),
    };
    return cmocka_run_group_tests(tests, make_tmp, remove_tmp);
}
