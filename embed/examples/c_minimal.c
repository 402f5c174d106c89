/* The C ABI in a C program: segment one raw 8-bit gray frame and print the foreground share.
 *   cmunext_c_minimal ARTIFACT WIDTH HEIGHT FRAME.raw
 * FRAME.raw holds WIDTH*HEIGHT bytes (one gray byte per pixel, rows packed). Built with the
 * library to prove the header is plain C; docs/firmware.md shows it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmunext/cmunext.h"

/* WIDTH or HEIGHT: decimal digits only, 1..65536 (the library's side limit); else 0 (atoi took
 * "12abc" as 12 and overflowed on 99999999999). */
static int parse_side(const char* text) {
    if (!*text || strspn(text, "0123456789") != strlen(text)) return 0;
    errno = 0;
    long v = strtol(text, NULL, 10);
    return errno == ERANGE || v < 1 || v > 65536 ? 0 : (int)v;
}

int main(int argc, char** argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s ARTIFACT WIDTH HEIGHT FRAME.raw\n", argv[0]);
        return 2;
    }
    int w = parse_side(argv[2]), h = parse_side(argv[3]);
    if (w == 0 || h == 0) {
        fprintf(stderr, "error: WIDTH and HEIGHT must be integers in 1..65536, got '%s' and '%s'\n", argv[2], argv[3]);
        return 2;
    }
    size_t n = (size_t)w * (size_t)h;
    uint8_t* frame = malloc(n);
    FILE* f = fopen(argv[4], "rb");
    if (!frame || !f || fread(frame, 1, n, f) != n) {
        fprintf(stderr, "error: cannot read %zu bytes from %s\n", n, argv[4]);
        if (f) fclose(f);
        free(frame);
        return 2;
    }
    fclose(f);

    cmunext_segmenter* seg = NULL;
    if (cmunext_open(argv[1], NULL, &seg) != CMUNEXT_OK) {   /* verified: hashes + self-test */
        fprintf(stderr, "error: %s\n", cmunext_last_error());
        free(frame);
        return 2;
    }
    int classes = cmunext_num_classes(seg);
    uint8_t* mask = malloc(n * (size_t)classes);
    cmunext_timings t;
    cmunext_status s = mask ? cmunext_segment_checked(seg, frame, n, w, h, 0, CMUNEXT_GRAY8, mask, n * (size_t)classes,
                                                      NULL, 0, &t)
                            : CMUNEXT_E_NO_MEMORY;
    if (s != CMUNEXT_OK) {
        fprintf(stderr, "error: %s (%s)\n", cmunext_last_error(), cmunext_status_string(s));
    } else {
        size_t fg = 0;
        for (size_t i = 0; i < n * (size_t)classes; ++i) fg += mask[i];
        printf("%s\nforeground %.2f%% in %.1f ms\n", cmunext_describe(seg), 100.0 * (double)fg / (double)(n * (size_t)classes),
               t.total_ms);
    }
    free(mask);
    free(frame);
    cmunext_close(seg);
    return s == CMUNEXT_OK ? 0 : 1;
}
