// The C ABI over cmunext::EdgeSegmenter: no exception crosses it; every failure is a status and
// a thread-local one-line message.
#include "cmunext/cmunext.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>

#include "cmunext/edge_segmenter.hpp"
#include "codec.hpp"
#include "signature.hpp"

namespace {
struct Segmenter {
    cmunext::EdgeSegmenter seg;
    std::string description;
    Segmenter(const std::string& path, const cmunext::Options& o);
};

thread_local std::string g_last_error;

// Every string the C ABI hands out is one line of valid UTF-8, whatever it quotes (OpenVINO's text,
// a file name in another encoding, a message cut mid-character): invalid bytes become U+FFFD and
// line breaks spaces, here and nowhere else.
std::string c_text(const std::string& s) {
    std::string out = cmunext::detail::valid_utf8(s);
    std::replace(out.begin(), out.end(), '\n', ' ');
    std::replace(out.begin(), out.end(), '\r', ' ');
    return out;
}

Segmenter::Segmenter(const std::string& path, const cmunext::Options& o) : seg(path, o), description(c_text(seg.describe())) {}

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

// Handles are ids, never pointers into the library: each call looks its handle up among the open
// segmenters, so a handle that was closed (segment after close, a second close), never opened, or
// is garbage is an error, not a use of freed memory. Ids are never reused: a stale handle cannot
// reach a segmenter opened later. A call holds its segmenter while it runs, so cmunext_close from
// another thread frees it when that call returns.
class Handles {
public:
    cmunext_segmenter* add(std::shared_ptr<Segmenter> s) {
        std::lock_guard<std::mutex> hold(lock_);
        const uintptr_t id = next_++;
        open_.emplace(id, std::move(s));
        return reinterpret_cast<cmunext_segmenter*>(id);
    }
    std::shared_ptr<Segmenter> find(const cmunext_segmenter* handle) {
        std::lock_guard<std::mutex> hold(lock_);
        auto it = open_.find(reinterpret_cast<uintptr_t>(handle));
        return it == open_.end() ? nullptr : it->second;
    }
    std::shared_ptr<Segmenter> remove(const cmunext_segmenter* handle) {
        std::lock_guard<std::mutex> hold(lock_);
        auto it = open_.find(reinterpret_cast<uintptr_t>(handle));
        if (it == open_.end()) return nullptr;
        std::shared_ptr<Segmenter> s = std::move(it->second);
        open_.erase(it);
        return s;
    }

private:
    std::mutex lock_;
    std::map<uintptr_t, std::shared_ptr<Segmenter>> open_;
    uintptr_t next_ = 1;
};

Handles& handles() {   // never destroyed: a cmunext_close from an atexit handler still finds it
    static Handles* h = new Handles;
    return *h;
}

// The open segmenter behind `handle`, or null with last_error saying why (`who`: the C function).
std::shared_ptr<Segmenter> lookup(const cmunext_segmenter* handle, const char* who) {
    if (!handle) {
        fail(CMUNEXT_E_INVALID_ARGUMENT, std::string(who) + ": handle is NULL");
        return nullptr;
    }
    std::shared_ptr<Segmenter> s = handles().find(handle);
    if (!s)
        fail(CMUNEXT_E_INVALID_ARGUMENT, std::string(who) + ": handle is not open (closed already, or not from cmunext_open)");
    return s;
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
    return guarded([&] { *out = handles().add(std::make_shared<Segmenter>(artifact, o)); });
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

struct Buffers {
    size_t pixels, mask, probability;   // bytes, bytes, floats; SIZE_MAX: not known
};

// cmunext_segment and cmunext_segment_checked (`who`)
cmunext_status segment(const char* who, cmunext_segmenter* seg, const cmunext::Frame& f, uint8_t* mask,
                       float* probability, const Buffers& sizes, cmunext_timings* timings) {
    const std::shared_ptr<Segmenter> s = lookup(seg, who);
    if (!s) return CMUNEXT_E_INVALID_ARGUMENT;
    const int format = static_cast<int>(f.format);
    if (!known_format(static_cast<cmunext_pixel_format>(format)))
        return fail(CMUNEXT_E_INVALID_ARGUMENT, std::string(who) + ": unknown pixel format " + std::to_string(format));
    return guarded([&] {
        double t[4];
        s->seg.segment_into(f, sizes.pixels, mask, sizes.mask, probability, sizes.probability, t);
        if (timings) *timings = {t[0], t[1], t[2], t[3]};
    });
}
}  // namespace

cmunext_status cmunext_segment(cmunext_segmenter* seg, const uint8_t* pixels, int width, int height, size_t stride,
                               cmunext_pixel_format format, uint8_t* mask, float* probability,
                               cmunext_timings* timings) {
    const Buffers sizes{SIZE_MAX, SIZE_MAX, SIZE_MAX};   // trusted
    return segment("cmunext_segment", seg, make_frame(pixels, width, height, stride, format), mask, probability, sizes,
                   timings);
}

cmunext_status cmunext_segment_checked(cmunext_segmenter* seg, const uint8_t* pixels, size_t pixels_size, int width,
                                       int height, size_t stride, cmunext_pixel_format format, uint8_t* mask,
                                       size_t mask_size, float* probability, size_t probability_size,
                                       cmunext_timings* timings) {
    const Buffers sizes{pixels_size, mask_size, probability_size};
    return segment("cmunext_segment_checked", seg, make_frame(pixels, width, height, stride, format), mask, probability,
                   sizes, timings);
}

cmunext_status cmunext_preprocess(const cmunext_segmenter* seg, const uint8_t* pixels, int width, int height,
                                  size_t stride, cmunext_pixel_format format, float* tensor, size_t capacity) {
    const std::shared_ptr<Segmenter> s = lookup(seg, "cmunext_preprocess");
    if (!s) return CMUNEXT_E_INVALID_ARGUMENT;
    if (!known_format(format))
        return fail(CMUNEXT_E_INVALID_ARGUMENT, "cmunext_preprocess: unknown pixel format " + std::to_string(static_cast<int>(format)));
    if (!tensor) return fail(CMUNEXT_E_INVALID_ARGUMENT, "cmunext_preprocess: tensor is NULL");
    const cmunext::Frame f = make_frame(pixels, width, height, stride, format);
    return guarded([&] {
        std::vector<float> t = s->seg.preprocess(f);
        if (t.size() > capacity)
            throw cmunext::Error(cmunext::ErrorCode::InvalidArgument, "cmunext_preprocess: tensor holds " +
                                 std::to_string(capacity) + " floats, the input needs " + std::to_string(t.size()));
        std::copy(t.begin(), t.end(), tensor);
    });
}

int cmunext_num_classes(const cmunext_segmenter* seg) {
    const std::shared_ptr<Segmenter> s = lookup(seg, "cmunext_num_classes");
    return s ? s->seg.info().classes : 0;
}

void cmunext_input_size(const cmunext_segmenter* seg, int* height, int* width) {
    const std::shared_ptr<Segmenter> s = lookup(seg, "cmunext_input_size");
    if (height) *height = s ? s->seg.info().net_height : 0;
    if (width) *width = s ? s->seg.info().net_width : 0;
}

double cmunext_threshold(const cmunext_segmenter* seg) {
    const std::shared_ptr<Segmenter> s = lookup(seg, "cmunext_threshold");
    return s ? s->seg.info().threshold : 0.0;
}

const char* cmunext_describe(const cmunext_segmenter* seg) {
    const std::shared_ptr<Segmenter> s = lookup(seg, "cmunext_describe");
    return s ? s->description.c_str() : "";   // the handle's own string: valid until cmunext_close
}

cmunext_status cmunext_self_test(cmunext_segmenter* seg) {
    const std::shared_ptr<Segmenter> s = lookup(seg, "cmunext_self_test");
    if (!s) return CMUNEXT_E_INVALID_ARGUMENT;
    return guarded([&] {
        cmunext::SelfTestResult r = s->seg.self_test();
        if (!r.passed()) throw cmunext::Error(cmunext::ErrorCode::Integrity, r.message);
    });
}

void cmunext_close(cmunext_segmenter* seg) {
    if (!seg) return;   // as free(NULL)
    if (!handles().remove(seg))
        fail(CMUNEXT_E_INVALID_ARGUMENT, "cmunext_close: handle is not open (closed already, or not from cmunext_open)");
}

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
