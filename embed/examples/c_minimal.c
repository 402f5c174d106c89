/* The C ABI in a C program: segment one raw 8-bit gray frame and print the foreground share.
 *   cmunext_c_minimal ARTIFACT WIDTH HEIGHT FRAME.raw
 * FRAME.raw holds WIDTH*HEIGHT bytes (one gray byte per pixel, rows packed). Built with the
 * library to prove the header is plain C; docs/firmware.md shows it. */
#include <stdio.h>
#include <stdlib.h>

#include "cmunext/cmunext.h"

int main(int argc, char** argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s ARTIFACT WIDTH HEIGHT FRAME.raw\n", argv[0]);
        return 2;
    }
    int w = atoi(argv[2]), h = atoi(argv[3]);
    if (w <= 0 || h <= 0) {
        fprintf(stderr, "error: WIDTH and HEIGHT must be positive\n");
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
    cmunext_status s = mask ? cmunext_segment(seg, frame, w, h, 0, CMUNEXT_GRAY8, mask, NULL, &t) : CMUNEXT_E_NO_MEMORY;
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
