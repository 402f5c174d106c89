/* cmunext C ABI: the verified CMUNeXt segmenter for C firmware.
 *
 *   cmunext_segmenter* seg = NULL;
 *   if (cmunext_open("model.xml", NULL, &seg) != CMUNEXT_OK) {
 *       fprintf(stderr, "%s\n", cmunext_last_error());   // e.g. "...: refused: ... sha256 ..."
 *       return 2;
 *   }
 *   uint8_t* mask = malloc((size_t)w * h * cmunext_num_classes(seg));
 *   if (cmunext_segment(seg, pixels, w, h, stride, CMUNEXT_BGR8, mask, NULL, NULL) != CMUNEXT_OK) ...
 *   cmunext_close(seg);
 *
 * Every function returns a status; on failure cmunext_last_error() gives one line of valid UTF-8
 * saying why (thread-local: the message of the last failed call on the calling thread, valid until
 * the next call on that thread; bytes of a quoted file name or OpenVINO message that are not UTF-8
 * show as U+FFFD). No function throws or aborts on bad input.
 * Handles: a handle that was closed, or never came from cmunext_open, is refused by every function
 * (CMUNEXT_E_INVALID_ARGUMENT, "handle is not open"), a second cmunext_close included; handles
 * are never reused.
 * Threads: cmunext_segment may be called on one handle from several threads at once (inference
 * is serialised per handle); open one handle per thread for parallel inference.
 */
#ifndef CMUNEXT_H
#define CMUNEXT_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define CMUNEXT_C_API __declspec(dllexport)
#else
#define CMUNEXT_C_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CMUNEXT_OK = 0,
    CMUNEXT_E_INVALID_ARGUMENT = 1, /* bad frame, option, buffer or path */
    CMUNEXT_E_IO = 2,               /* a file that cannot be read */
    CMUNEXT_E_INTEGRITY = 3,        /* hash or self-test mismatch: the artifact was refused */
    CMUNEXT_E_UNSUPPORTED = 4,      /* artifact kind or contract not implemented here */
    CMUNEXT_E_RUNTIME = 5,          /* OpenVINO could not read, compile or run the model, or its output was NaN/inf */
    CMUNEXT_E_NO_MEMORY = 6
} cmunext_status;

typedef enum {
    CMUNEXT_BGR8 = 0,
    CMUNEXT_RGB8 = 1,
    CMUNEXT_GRAY8 = 2,
    CMUNEXT_BGRA8 = 3,
    CMUNEXT_RGBA8 = 4
} cmunext_pixel_format;

typedef struct {
    const char* device;    /* "CPU" (NULL), "GPU", "NPU", "AUTO" */
    int strict_device;     /* non-zero: refuse instead of falling back to CPU */
    int verify;            /* non-zero (default): file hashes and embedded self-test before use */
    int threads;           /* 0: the artifact's stored setting, else OpenVINO's default */
    const char* cache_dir; /* OpenVINO compiled-model cache folder (created if missing), or NULL/"": none.
                              Not a folder (e.g. a file): refused at open. Refused under a trust policy */
    int64_t max_pixels;    /* largest frame (width*height); 0: no limit; default 40000000 */
    const char* trusted_keys; /* trust policy: PEM public-key paths separated by ':' that must have signed
                                 <artifact>.sig; NULL: $CMUNEXT_TRUSTED_KEYS, else no policy. A refusal is
                                 CMUNEXT_E_INTEGRITY; a build without OpenSSL gives CMUNEXT_E_UNSUPPORTED */
} cmunext_options;

typedef struct {
    double preprocess_ms, infer_ms, postprocess_ms, total_ms;
} cmunext_timings;

typedef struct cmunext_segmenter cmunext_segmenter;

/* defaults: device CPU, verify on, threads 0, max_pixels 40000000, trusted_keys NULL */
CMUNEXT_C_API void cmunext_default_options(cmunext_options* options);

/* Opens, verifies (unless options->verify == 0) and compiles an artifact (.xml or .onnx).
 * options may be NULL. On success *out is a handle for cmunext_close. */
CMUNEXT_C_API cmunext_status cmunext_open(const char* artifact, const cmunext_options* options,
                                          cmunext_segmenter** out);

/* Segments one frame (8 bit per channel; stride >= width * channels bytes, 0 = packed).
 * mask: width*height*classes bytes, 1 where the probability exceeds the artifact's threshold,
 * else 0 (row-major, classes interleaved). probability: width*height*classes floats.
 * Either may be NULL; timings may be NULL. The buffers' sizes are trusted: prefer
 * cmunext_segment_checked where they are known. */
CMUNEXT_C_API cmunext_status cmunext_segment(cmunext_segmenter* seg, const uint8_t* pixels, int width,
                                             int height, size_t stride, cmunext_pixel_format format,
                                             uint8_t* mask, float* probability, cmunext_timings* timings);

/* cmunext_segment with each buffer's size: pixels_size bytes readable at pixels (the frame needs
 * (height - 1) * stride + width * channels), mask_size bytes and probability_size floats (each needs
 * width*height*classes where not NULL). A buffer too small is CMUNEXT_E_INVALID_ARGUMENT naming
 * what it needs, before anything is read or written. SIZE_MAX: that size is not known (trusted). */
CMUNEXT_C_API cmunext_status cmunext_segment_checked(cmunext_segmenter* seg, const uint8_t* pixels,
                                                     size_t pixels_size, int width, int height, size_t stride,
                                                     cmunext_pixel_format format, uint8_t* mask, size_t mask_size,
                                                     float* probability, size_t probability_size,
                                                     cmunext_timings* timings);

/* The network input the artifact's contract makes of a frame: in_channels x height x width floats
 * (cmunext_input_size; in_channels is 3 unless the contract says 1) into `tensor`, `capacity`
 * floats long. For checking a port against the Python preprocessing; segment() does this itself. */
CMUNEXT_C_API cmunext_status cmunext_preprocess(const cmunext_segmenter* seg, const uint8_t* pixels, int width,
                                                int height, size_t stride, cmunext_pixel_format format,
                                                float* tensor, size_t capacity);

/* 0 (0.0, "", sizes 0) for a handle that is not open, with last_error saying so */
CMUNEXT_C_API int cmunext_num_classes(const cmunext_segmenter* seg);
/* network input size and threshold from the artifact's preprocessing contract */
CMUNEXT_C_API void cmunext_input_size(const cmunext_segmenter* seg, int* height, int* width);
CMUNEXT_C_API double cmunext_threshold(const cmunext_segmenter* seg);
/* one line: artifact, device, precision, how it was verified (valid until cmunext_close) */
CMUNEXT_C_API const char* cmunext_describe(const cmunext_segmenter* seg);
/* runs the embedded self-test again; CMUNEXT_E_INTEGRITY if it fails (message in last_error) */
CMUNEXT_C_API cmunext_status cmunext_self_test(cmunext_segmenter* seg);

/* NULL: nothing (as free). A handle that is not open (a second close): nothing freed, last_error says so. */
CMUNEXT_C_API void cmunext_close(cmunext_segmenter* seg);

CMUNEXT_C_API const char* cmunext_last_error(void);
CMUNEXT_C_API const char* cmunext_status_string(cmunext_status status);
CMUNEXT_C_API const char* cmunext_version(void);

#ifdef __cplusplus
}
#endif

#endif /* CMUNEXT_H */
