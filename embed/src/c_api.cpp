// The C ABI over cmunext::EdgeSegmenter: no exception crosses it; every failure is a status and
// a thread-local one-line message.
#include "cmunext/cmunext.h"

#include <algorithm>
#include <new>
#include <string>

#include "cmunext/edge_segmenter.hpp"
#include "codec.hpp"
#include "signature.hpp"

namespace {
// Every string the C ABI hands out is one line of valid UTF-8, whatever it quotes (OpenVINO's text,
// a file name in another encoding, a message cut mid-character): invalid bytes become U+FFFD and
// line breaks spaces, here and nowhere else.
std::string c_text(const std::string& s) {
    std::string out = cmunext::detail::valid_utf8(s);
    std::replace(out.begin(), out.end(), '\n', ' ');
    std::replace(out.begin(), out.end(), '\r', ' ');
    return out;
}
}  // namespace

struct cmunext_segmenter {
    cmunext::EdgeSegmenter seg;
    std::string description;
    cmunext_segmenter(const std::string& path, const cmunext::Options& o) : seg(path, o), description(c_text(seg.describe())) {}
};

namespace {
thread_local std::string g_last_error;

cmunext_status fail(cmunext_status s, const std::string& message) {
    g_last_error = c_text(message);
    return s;
}

cmunext_status from_error(const cmunext::Error& e) {
    switch (e.code()) {
        case cmunext::ErrorCode::InvalidArgument: return fail(CMUNEXT_E_INVALID_ARGUMENT, e.what());
        case cmunext::ErrorCode::Io: return fail(CMUNEXT_E_IO, e.what());
        case cmunext::ErrorCode::Integrity: return fail(CMUNEXT_E_INTEGRITY, e.what());
        case cmunext::ErrorCode::Unsupported: return fail(CMUNEXT_E_UNSUPPORTED, e.what());
        case cmunext::ErrorCode::Runtime: return fail(CMUNEXT_E_RUNTIME, e.what());
    }
    return fail(CMUNEXT_E_RUNTIME, e.what());
}

template <typename F>
cmunext_status guarded(F&& f) {
    try {
        f();
        return CMUNEXT_OK;
    } catch (const cmunext::Error& e) {
        return from_error(e);
    } catch (const std::bad_alloc&) {
        return fail(CMUNEXT_E_NO_MEMORY, "out of memory");
    } catch (const std::exception& e) {
        return fail(CMUNEXT_E_RUNTIME, e.what());
    } catch (...) {
        return fail(CMUNEXT_E_RUNTIME, "unknown error");
    }
}
}  // namespace

extern "C" {

void cmunext_default_options(cmunext_options* o) {
    if (!o) return;
    o->device = "CPU";
    o->strict_device = 0;
    o->verify = 1;
    o->threads = 0;
    o->cache_dir = nullptr;
    o->max_pixels = 40000000;
    o->trusted_keys = nullptr;
}

cmunext_status cmunext_open(const char* artifact, const cmunext_options* options, cmunext_segmenter** out) {
    if (!out) return fail(CMUNEXT_E_INVALID_ARGUMENT, "cmunext_open: out is NULL");
    *out = nullptr;
    if (!artifact || !*artifact) return fail(CMUNEXT_E_INVALID_ARGUMENT, "cmunext_open: no artifact path given");
    cmunext::Options o;
    if (options) {
        if (options->device && *options->device) o.device = options->device;
        o.strict_device = options->strict_device != 0;
        o.verify = options->verify != 0;
        if (options->threads < 0) return fail(CMUNEXT_E_INVALID_ARGUMENT, "cmunext_open: threads must be >= 0");
        o.threads = options->threads;
        if (options->cache_dir) o.cache_dir = options->cache_dir;
        if (options->max_pixels < 0) return fail(CMUNEXT_E_INVALID_ARGUMENT, "cmunext_open: max_pixels must be >= 0");
        o.max_pixels = options->max_pixels;
        if (options->trusted_keys) {            // ':'-separated, as $CMUNEXT_TRUSTED_KEYS
            o.trusted_keys = cmunext::detail::split_key_list(options->trusted_keys);
            if (o.trusted_keys.empty())
                return fail(CMUNEXT_E_INVALID_ARGUMENT, "cmunext_open: trusted_keys names no public key file");
        }
    }
    return guarded([&] { *out = new cmunext_segmenter(artifact, o); });
}

namespace {
bool known_format(cmunext_pixel_format format) {
    return static_cast<int>(format) >= CMUNEXT_BGR8 && static_cast<int>(format) <= CMUNEXT_RGBA8;
}

cmunext::Frame make_frame(const uint8_t* pixels, int width, int height, size_t stride, cmunext_pixel_format format) {
    cmunext::Frame f;
    f.data = pixels;
    f.width = width;
    f.height = height;
    f.stride = stride;
    f.format = static_cast<cmunext::PixelFormat>(format);
    return f;
}
}  // namespace

cmunext_status cmunext_segment(cmunext_segmenter* seg, const uint8_t* pixels, int width, int height, size_t stride,
                               cmunext_pixel_format format, uint8_t* mask, float* probability,
                               cmunext_timings* timings) {
    if (!seg) return fail(CMUNEXT_E_INVALID_ARGUMENT, "cmunext_segment: handle is NULL");
    if (!known_format(format))
        return fail(CMUNEXT_E_INVALID_ARGUMENT, "cmunext_segment: unknown pixel format " + std::to_string(static_cast<int>(format)));
    const cmunext::Frame f = make_frame(pixels, width, height, stride, format);
    return guarded([&] {
        double t[4];
        seg->seg.segment_into(f, mask, probability, t);
        if (timings) *timings = {t[0], t[1], t[2], t[3]};
    });
}

cmunext_status cmunext_preprocess(const cmunext_segmenter* seg, const uint8_t* pixels, int width, int height,
                                  size_t stride, cmunext_pixel_format format, float* tensor, size_t capacity) {
    if (!seg) return fail(CMUNEXT_E_INVALID_ARGUMENT, "cmunext_preprocess: handle is NULL");
    if (!known_format(format))
        return fail(CMUNEXT_E_INVALID_ARGUMENT, "cmunext_preprocess: unknown pixel format " + std::to_string(static_cast<int>(format)));
    if (!tensor) return fail(CMUNEXT_E_INVALID_ARGUMENT, "cmunext_preprocess: tensor is NULL");
    const cmunext::Frame f = make_frame(pixels, width, height, stride, format);
    return guarded([&] {
        std::vector<float> t = seg->seg.preprocess(f);
        if (t.size() > capacity)
            throw cmunext::Error(cmunext::ErrorCode::InvalidArgument, "cmunext_preprocess: tensor holds " +
                                 std::to_string(capacity) + " floats, the input needs " + std::to_string(t.size()));
        std::copy(t.begin(), t.end(), tensor);
    });
}

int cmunext_num_classes(const cmunext_segmenter* seg) { return seg ? seg->seg.info().classes : 0; }

void cmunext_input_size(const cmunext_segmenter* seg, int* height, int* width) {
    if (height) *height = seg ? seg->seg.info().net_height : 0;
    if (width) *width = seg ? seg->seg.info().net_width : 0;
}

double cmunext_threshold(const cmunext_segmenter* seg) { return seg ? seg->seg.info().threshold : 0.0; }

const char* cmunext_describe(const cmunext_segmenter* seg) { return seg ? seg->description.c_str() : ""; }

cmunext_status cmunext_self_test(cmunext_segmenter* seg) {
    if (!seg) return fail(CMUNEXT_E_INVALID_ARGUMENT, "cmunext_self_test: handle is NULL");
    return guarded([&] {
        cmunext::SelfTestResult r = seg->seg.self_test();
        if (!r.passed()) throw cmunext::Error(cmunext::ErrorCode::Integrity, r.message);
    });
}

void cmunext_close(cmunext_segmenter* seg) { delete seg; }

const char* cmunext_last_error(void) { return g_last_error.c_str(); }

const char* cmunext_status_string(cmunext_status s) {
    switch (s) {
        case CMUNEXT_OK: return "ok";
        case CMUNEXT_E_INVALID_ARGUMENT: return "invalid argument";
        case CMUNEXT_E_IO: return "i/o error";
        case CMUNEXT_E_INTEGRITY: return "integrity check failed: artifact refused";
        case CMUNEXT_E_UNSUPPORTED: return "unsupported artifact or contract";
        case CMUNEXT_E_RUNTIME: return "OpenVINO runtime error";
        case CMUNEXT_E_NO_MEMORY: return "out of memory";
    }
    return "unknown status";
}

const char* cmunext_version(void) { return cmunext::version(); }

}  // extern "C"
