/* fuzz_frontend.c — model JSON text -> frontend (parse, config expressions, blocks, repeat,
 * lowering to IR), then what capc does next with the result: verify the frontend's IR and
 * infer shapes. Bad models must come back as a Diag, never crash, leak or abort; IR that
 * fails verification after a successful frontend is a capc bug (driver/pipeline.c says so
 * too), so it is reported as a crash here. */
#include "fuzz_util.h"

#include "frontend.h"
#include "ir.h"
#include "passes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_cstring(data, size);
    Diag d;
    Module *m = frontend_load_text(text, size, "fuzz.json", NULL, 0, &d);
    if (m) {
        Diag v = {0};
        FUZZ_CHECK(ir_verify_module(m, false, &v) == 0, "invalid IR after the frontend: %s",
                   v.msg);
        Diag s = {0};
        (void)pass_infer_shapes(m, NULL, &s); /* a shape error is the model's, not capc's */
        module_free(m);
    } else {
        FUZZ_CHECK(d.msg[0] != 0, "frontend failed without a message");
    }
    free(text);
    return 0;
}
