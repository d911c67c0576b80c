/*
 * Gate a feature of a C application with libtessera.
 *
 *   gate STATE_FILE PRODUCT_ID SERVER_URL|- [LICENSE_KEY]
 *
 * With a key it activates online first; then it checks `export_pdf`, uses 3 units of `api_calls`, and sends a
 * heartbeat when a server is given (a server that cannot be reached is fine: the checks are local).
 * Exit status: 0 when export_pdf is allowed, 1 when denied, 2 on an error.
 *
 * Build: cc -I ffi/include gate.c -L target/release -ltessera -o gate
 * keyset.h holds the vendor's public keyset (`tessera-server keys export`) as a C string: compile it into the
 * application rather than reading it from a file the customer could replace.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "keyset.h" /* static const char KEYSET_JSON[] = "{\"keys\":[...]}"; */
#include "tessera.h"

static int fail(const char *what, TesseraStatus status) {
    const char *code = tessera_last_server_code();
    fprintf(stderr, "%s failed (status %d%s%s): %s\n", what, (int)status, code ? ", " : "", code ? code : "",
            tessera_last_error());
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s STATE_FILE PRODUCT_ID SERVER_URL|- [LICENSE_KEY]\n", argv[0]);
        return 2;
    }
    TesseraOptions options;
    memset(&options, 0, sizeof options);
    options.abi_version = TESSERA_ABI_VERSION;
    options.state_path = argv[1];
    options.keyset_json = KEYSET_JSON;
    options.product_id = argv[2];
    options.server_url = strcmp(argv[3], "-") != 0 ? argv[3] : NULL;
    options.app_version = "gate-example 1.0";

    TesseraAgent *agent = NULL;
    TesseraStatus status = tessera_open(&options, &agent);
    if (status != TESSERA_STATUS_OK) {
        return fail("open", status);
    }

    if (argc > 4) {
        char *outcome = NULL;
        status = tessera_activate(agent, argv[4], &outcome);
        if (status != TESSERA_STATUS_OK) {
            int rc = fail("activate", status);
            tessera_close(agent);
            return rc;
        }
        printf("activated: %s\n", outcome);
        tessera_string_free(outcome);
    }

    TesseraDecision pdf;
    status = tessera_check(agent, "export_pdf", &pdf);
    if (status != TESSERA_STATUS_OK) {
        int rc = fail("check", status);
        tessera_close(agent);
        return rc;
    }
    printf("export_pdf: %s (%s)\n", pdf.allowed ? "allowed" : "denied", tessera_reason_name((int32_t)pdf.reason));
    if (!pdf.allowed) {
        printf("why: %s\n", tessera_reason_explain((int32_t)pdf.reason));
    }

    TesseraDecision calls;
    status = tessera_consume(agent, "api_calls", 3, &calls);
    if (status != TESSERA_STATUS_OK) {
        int rc = fail("consume", status);
        tessera_close(agent);
        return rc;
    }
    printf("api_calls: %s (%s), %" PRId64 " used of %" PRId64 ", %" PRId64 " left\n",
           calls.allowed ? "recorded" : "refused", tessera_reason_name((int32_t)calls.reason), calls.used,
           calls.limit, calls.remaining);

    if (options.server_url != NULL) {
        char *beat = NULL;
        status = tessera_heartbeat(agent, &beat);
        if (status == TESSERA_STATUS_OK) {
            printf("heartbeat: %s\n", beat);
            tessera_string_free(beat);
        } else if (status == TESSERA_STATUS_UNREACHABLE) {
            printf("heartbeat: server unreachable, working offline\n");
        } else {
            int rc = fail("heartbeat", status);
            tessera_close(agent);
            return rc;
        }
    }

    tessera_close(agent);
    return pdf.allowed ? 0 : 1;
}
