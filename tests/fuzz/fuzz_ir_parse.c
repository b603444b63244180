/* fuzz_ir_parse.c — the IR text parser (ir/parse.c). Any text must parse or fail with a
 * message. For a module that parses and verifies, the documented round trip must hold
 * (docs/ir.md: print -> parse -> print is the identity), so a second parse of the printed
 * text must succeed and print the same text. */
#include "fuzz_util.h"

#include "ir.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_cstring(data, size);
    Diag d = {0};
    Module *m = ir_parse(text, "fuzz.ir", &d);
    if (!m) {
        FUZZ_CHECK(d.msg[0] != 0, "ir_parse failed without a message");
        free(text);
        return 0;
    }
    Diag v = {0};
    if (ir_verify_module(m, false, &v) == 0) {
        char *printed = ir_module_to_string(m);
        FUZZ_CHECK(printed != NULL, "ir_module_to_string returned NULL");
        Diag d2 = {0};
        Module *m2 = ir_parse(printed, "printed.ir", &d2);
        FUZZ_CHECK(m2 != NULL, "printed module does not parse: %s\n%s", d2.msg, printed);
        char *again = ir_module_to_string(m2);
        FUZZ_CHECK(again && strcmp(printed, again) == 0,
                   "print -> parse -> print differs:\n%s\n----\n%s", printed,
                   again ? again : "(null)");
        free(again);
        module_free(m2);
        free(printed);
    }
    module_free(m);
    free(text);
    return 0;
}
