#include "contract.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <stdexcept>

namespace cmunext::detail {

// ---------------------------------------------------------------------------------------------
// contract JSON
namespace {
const char* const kKeys[] = {"channel_order", "extra_scale", "height", "in_channels", "interpolation",
                             "max_pixel_value", "mean", "name", "std", "threshold", "width"};

[[noreturn]] void invalid(const std::string& what) { throw std::invalid_argument("preprocessing contract " + what); }

int as_int(const Json& v, const char* key) {
    double d = v.is_number() ? v.as_number() : NAN;
    if (!v.is_number() || d != std::floor(d) || std::fabs(d) > 1e9)
        invalid(std::string("field '") + key + "' must be an integer");
    return static_cast<int>(d);
}
double as_float(const Json& v, const char* key) {
    if (!v.is_number()) invalid(std::string("field '") + key + "' must be a number");
    return v.as_number();
}
std::string as_str(const Json& v, const char* key) {
    if (!v.is_string()) invalid(std::string("field '") + key + "' must be a string");
    return v.as_string();
}
std::vector<double> as_floats(const Json& v, const char* key) {
    if (!v.is_array()) invalid(std::string("field '") + key + "' must be a list of numbers");
    std::vector<double> out;
    for (const Json& x : v.as_array()) out.push_back(as_float(x, key));
    return out;
}
Json text(const std::string& s) {
    std::string quoted = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') quoted += '\\';
        quoted += c;
    }
    return Json::parse(quoted + "\"");
}
}  // namespace

Contract Contract::from_json(const std::string& s) {
    Json j;
    try {
        j = Json::parse(s);
    } catch (const JsonError& e) {
        invalid(std::string("is not valid JSON (") + e.what() + ")");
    }
    if (!j.is_object()) invalid("must be a JSON object");
    std::set<std::string> known(std::begin(kKeys), std::end(kKeys));
    std::string unknown;
    for (const auto& kv : j.as_object())
        if (!known.count(kv.first)) unknown += (unknown.empty() ? "" : ", ") + kv.first;
    if (!unknown.empty()) invalid("has unknown key(s) " + unknown);
    Contract c;
    if (auto* v = j.find("height")) c.height = as_int(*v, "height");
    if (auto* v = j.find("width")) c.width = as_int(*v, "width");
    if (auto* v = j.find("channel_order")) c.channel_order = as_str(*v, "channel_order");
    if (auto* v = j.find("interpolation")) c.interpolation = as_str(*v, "interpolation");
    if (auto* v = j.find("mean")) c.mean = as_floats(*v, "mean");
    if (auto* v = j.find("std")) c.std = as_floats(*v, "std");
    if (auto* v = j.find("max_pixel_value")) c.max_pixel_value = as_float(*v, "max_pixel_value");
    if (auto* v = j.find("extra_scale")) c.extra_scale = as_float(*v, "extra_scale");
    if (auto* v = j.find("threshold")) c.threshold = as_float(*v, "threshold");
    if (auto* v = j.find("in_channels")) c.in_channels = as_int(*v, "in_channels");
    if (auto* v = j.find("name")) c.name = as_str(*v, "name");
    // PreprocessSpec.__post_init__
    for (int side : {c.height, c.width})
        if (side <= 0 || side % 16)
            invalid("network input size must be a positive multiple of 16 (CMUNeXt has four 2x2 max-pools); got " +
                    std::to_string(c.height) + "x" + std::to_string(c.width));
    if (c.channel_order != "bgr" && c.channel_order != "rgb")
        invalid("channel_order must be 'bgr' or 'rgb', got '" + c.channel_order + "'");
    if (c.interpolation != "linear" && c.interpolation != "nearest" && c.interpolation != "area" &&
        c.interpolation != "cubic")
        invalid("interpolation must be one of area, cubic, linear, nearest");
    if (c.in_channels != 1 && c.in_channels != 3)
        invalid("in_channels must be 1 or 3, got " + std::to_string(c.in_channels));
    if (static_cast<int>(c.mean.size()) != c.in_channels || static_cast<int>(c.std.size()) != c.in_channels)
        invalid("mean and std need one value per input channel");
    if (!(c.threshold > 0.0 && c.threshold < 1.0)) invalid("threshold must lie in (0, 1)");
    for (double s : c.std)                // as PreprocessSpec: a zero std would give inf input
        if (!(s > 0.0)) invalid("std must hold numbers above 0");
    if (!(c.max_pixel_value > 0.0) || !(c.extra_scale > 0.0))
        invalid("max_pixel_value and extra_scale must be above 0");
    return c;
}

Json Contract::to_json() const {
    auto list = [](const std::vector<double>& v) {
        std::string s = "[";
        for (size_t i = 0; i < v.size(); ++i) {
            char buf[64];
            std::snprintf(buf, sizeof buf, "%.17g", v[i]);
            s += (i ? ", " : "") + std::string(buf);
        }
        return s + "]";
    };
    auto num = [](double v) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.17g", v);
        return std::string(buf);
    };
    std::string s = "{\"channel_order\": " + text(channel_order).dump() + ", \"extra_scale\": " + num(extra_scale) +
                    ", \"height\": " + std::to_string(height) + ", \"in_channels\": " + std::to_string(in_channels) +
                    ", \"interpolation\": " + text(interpolation).dump() + ", \"max_pixel_value\": " +
                    num(max_pixel_value) + ", \"mean\": " + list(mean) + ", \"name\": " + text(name).dump() +
                    ", \"std\": " + list(std) + ", \"threshold\": " + num(threshold) +
                    ", \"width\": " + std::to_string(width) + "}";
    return Json::parse(s);
}

std::vector<std::string> Contract::differences(const Json& recorded) const {
    Json now = to_json();
    std::set<std::string> keys;
    for (const auto& kv : now.as_object()) keys.insert(kv.first);
    if (recorded.is_object())
        for (const auto& kv : recorded.as_object()) keys.insert(kv.first);
    std::vector<std::string> out;
    for (const std::string& k : keys) {
        if (k == "name") continue;
        const Json* a = now.find(k);
        const Json* b = recorded.find(k);
        if (a && b && a->equals(*b)) continue;
        out.push_back(k + " " + (a ? a->dump() : "None") + " (exported with " + (b ? b->dump() : "None") + ")");
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// resize
namespace {
inline int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

inline int16_t fixed_coef(float v) {   // saturate_cast<short>(v * INTER_RESIZE_COEF_SCALE)
    long r = std::lrint(v * 2048.0f);
    return static_cast<int16_t>(r < -32768 ? -32768 : (r > 32767 ? 32767 : r));
}

// OpenCV's source coordinate of destination index d: ((d + 0.5) * scale - 0.5) rounded to float,
// with scale = 1 / (dsize / ssize) computed in double
struct Tap {
    int s;
    float f;
};
Tap linear_tap(int d, double scale) {
    float fx = static_cast<float>((d + 0.5) * scale - 0.5);
    int sx = static_cast<int>(std::floor(fx));
    fx -= static_cast<float>(sx);
    return {sx, fx};
}
}  // namespace

void resize_linear_u8(const uint8_t* src, int sw, int sh, size_t sstride, int cn, uint8_t* dst, int dw, int dh) {
    if (sw == dw && sh == dh) {   // cv::resize copies
        for (int y = 0; y < sh; ++y) std::memcpy(dst + static_cast<size_t>(y) * dw * cn, src + y * sstride, static_cast<size_t>(sw) * cn);
        return;
    }
    const double scale_x = 1.0 / (static_cast<double>(dw) / sw);
    const double scale_y = 1.0 / (static_cast<double>(dh) / sh);
    // horizontal taps: clamped to the image with the weight moved onto the edge pixel
    std::vector<int> x0(dw), x1(dw);
    std::vector<int16_t> a0(dw), a1(dw);
    for (int dx = 0; dx < dw; ++dx) {
        Tap t = linear_tap(dx, scale_x);
        if (t.s < 0) t = {0, 0.0f};
        if (t.s >= sw - 1) t = {sw - 1, 0.0f};
        x0[dx] = t.s;
        x1[dx] = std::min(t.s + 1, sw - 1);
        a0[dx] = fixed_coef(1.0f - t.f);
        a1[dx] = fixed_coef(t.f);
    }
    // vertical taps: rows clamped, weights kept (as OpenCV does)
    std::vector<int> y0(dh), y1(dh);
    std::vector<int16_t> b0(dh), b1(dh);
    for (int dy = 0; dy < dh; ++dy) {
        Tap t = linear_tap(dy, scale_y);
        y0[dy] = clampi(t.s, 0, sh - 1);
        y1[dy] = clampi(t.s + 1, 0, sh - 1);
        b0[dy] = fixed_coef(1.0f - t.f);
        b1[dy] = fixed_coef(t.f);
    }
    const int width = dw * cn;
    std::vector<int32_t> row0(width), row1(width);
    int have0 = -1, have1 = -1;
    auto hrow = [&](int sy, std::vector<int32_t>& out) {
        const uint8_t* s = src + static_cast<size_t>(sy) * sstride;
        for (int dx = 0; dx < dw; ++dx) {
            const uint8_t* p0 = s + static_cast<size_t>(x0[dx]) * cn;
            const uint8_t* p1 = s + static_cast<size_t>(x1[dx]) * cn;
            for (int k = 0; k < cn; ++k) out[dx * cn + k] = p0[k] * a0[dx] + p1[k] * a1[dx];
        }
    };
    for (int dy = 0; dy < dh; ++dy) {
        if (have0 != y0[dy]) {
            if (have1 == y0[dy]) { std::swap(row0, row1); std::swap(have0, have1); }
            else { hrow(y0[dy], row0); have0 = y0[dy]; }
        }
        if (have1 != y1[dy]) { hrow(y1[dy], row1); have1 = y1[dy]; }
        const int32_t* r0 = row0.data();
        const int32_t* r1 = row1.data();
        uint8_t* out = dst + static_cast<size_t>(dy) * width;
        const int B0 = b0[dy], B1 = b1[dy];
        // OpenCV's SIMD rounding (VResizeLinearVec_32s8u): 16-bit high products of the values
        // pre-shifted by 4, a saturating 16-bit sum, then (+2) >> 2; every valid network width is
        // a whole number of SIMD blocks, so no element takes the scalar path
        for (int x = 0; x < width; ++x) {
            int v0 = ((r0[x] >> 4) * B0) >> 16;
            int v1 = ((r1[x] >> 4) * B1) >> 16;
            int v = clampi(v0 + v1, -32768, 32767);
            v = (v + 2) >> 2;
            out[x] = static_cast<uint8_t>(clampi(v, 0, 255));
        }
    }
}

void resize_nearest_u8(const uint8_t* src, int sw, int sh, size_t sstride, int cn, uint8_t* dst, int dw, int dh) {
    if (sw == dw && sh == dh) {
        for (int y = 0; y < sh; ++y) std::memcpy(dst + static_cast<size_t>(y) * dw * cn, src + y * sstride, static_cast<size_t>(sw) * cn);
        return;
    }
    const double ifx = 1.0 / (static_cast<double>(dw) / sw), ify = 1.0 / (static_cast<double>(dh) / sh);
    std::vector<int> xs(dw);
    for (int x = 0; x < dw; ++x) xs[x] = std::min(static_cast<int>(std::floor(x * ifx)), sw - 1);
    for (int y = 0; y < dh; ++y) {
        int sy = std::min(static_cast<int>(std::floor(y * ify)), sh - 1);
        const uint8_t* s = src + static_cast<size_t>(sy) * sstride;
        uint8_t* d = dst + static_cast<size_t>(y) * dw * cn;
        for (int x = 0; x < dw; ++x) std::memcpy(d + x * cn, s + static_cast<size_t>(xs[x]) * cn, cn);
    }
}

void resize_linear_f32(const float* src, int sw, int sh, int cn, float* dst, int dw, int dh) {
    // Bilinear with pixel centres aligned, border replicated, computed in double and rounded once:
    // within one float32 ulp of cv2.resize(INTER_LINEAR) for float images on x86 (where OpenCV
    // hands float resizes to IPP).
    if (sw == dw && sh == dh) {
        std::memcpy(dst, src, sizeof(float) * static_cast<size_t>(sw) * sh * cn);
        return;
    }
    struct DTap {
        int lo, hi;
        double f;
    };
    auto taps = [](int ssz, int dsz) {
        std::vector<DTap> t(dsz);
        const double scale = static_cast<double>(ssz) / dsz;
        for (int d = 0; d < dsz; ++d) {
            double p = (d + 0.5) * scale - 0.5;
            double fl = std::floor(p);
            int s = static_cast<int>(fl);
            t[d] = {clampi(s, 0, ssz - 1), clampi(s + 1, 0, ssz - 1), p - fl};
        }
        return t;
    };
    const std::vector<DTap> tx = taps(sw, dw), ty = taps(sh, dh);
    const size_t width = static_cast<size_t>(dw) * cn;
    std::vector<double> h0(width), h1(width);
    int have0 = -1, have1 = -1;
    auto hrow = [&](int sy, std::vector<double>& out) {
        const float* s = src + static_cast<size_t>(sy) * sw * cn;
        for (int dx = 0; dx < dw; ++dx) {
            const DTap& t = tx[dx];
            for (int k = 0; k < cn; ++k)
                out[dx * cn + k] = s[t.lo * cn + k] * (1.0 - t.f) + s[t.hi * cn + k] * t.f;
        }
    };
    for (int dy = 0; dy < dh; ++dy) {
        const DTap& t = ty[dy];
        if (have0 != t.lo) {
            if (have1 == t.lo) { std::swap(h0, h1); std::swap(have0, have1); }
            else { hrow(t.lo, h0); have0 = t.lo; }
        }
        if (have1 != t.hi) { hrow(t.hi, h1); have1 = t.hi; }
        float* out = dst + static_cast<size_t>(dy) * width;
        for (size_t x = 0; x < width; ++x) out[x] = static_cast<float>(h0[x] * (1.0 - t.f) + h1[x] * t.f);
    }
}

// ---------------------------------------------------------------------------------------------
// frame -> tensor
int layout_channels(Layout l) {
    switch (l) {
        case Layout::GRAY: return 1;
        case Layout::BGR:
        case Layout::RGB: return 3;
        default: return 4;
    }
}

std::string resize_problem(const Contract& c) {
    if (c.interpolation == "linear" || c.interpolation == "nearest") return "";
    return "its preprocessing contract resizes with '" + c.interpolation +
           "', which this C++ runtime does not implement (linear and nearest)";
}

namespace {
void resize_u8(const Contract& c, const uint8_t* src, int sw, int sh, size_t sstride, int cn, uint8_t* dst) {
    if (c.interpolation == "linear") resize_linear_u8(src, sw, sh, sstride, cn, dst, c.width, c.height);
    else if (c.interpolation == "nearest") resize_nearest_u8(src, sw, sh, sstride, cn, dst, c.width, c.height);
    else throw std::invalid_argument(resize_problem(c));
}
}  // namespace

void normalize(const Contract& c, const uint8_t* hwc, float* chw) {
    const int cn = c.in_channels;
    const size_t plane = static_cast<size_t>(c.height) * c.width;
    float mean[3], inv_std[3];
    const float mpv = static_cast<float>(c.max_pixel_value);
    for (int k = 0; k < cn; ++k) {
        mean[k] = static_cast<float>(c.mean[k]) * mpv;
        inv_std[k] = 1.0f / (static_cast<float>(c.std[k]) * mpv);
    }
    const bool scaled = c.extra_scale != 1.0;
    const float divisor = static_cast<float>(1.0 / c.extra_scale);
    for (int k = 0; k < cn; ++k) {
        float* out = chw + k * plane;
        for (size_t i = 0; i < plane; ++i) {
            float v = (static_cast<float>(hwc[i * cn + k]) - mean[k]) * inv_std[k];
            out[i] = scaled ? v / divisor : v;
        }
    }
}

void preprocess(const Contract& c, const uint8_t* pixels, int w, int h, size_t stride, Layout layout, float* out) {
    const int src_cn = layout_channels(layout);
    const size_t net = static_cast<size_t>(c.height) * c.width;
    std::vector<uint8_t> resized(net * c.in_channels);
    if (c.in_channels == 1 || layout == Layout::GRAY) {
        // one channel through the resize: the gray frame itself, or OpenCV's BGR2GRAY of the frame
        // (15-bit fixed point, as OpenCV 5 computes it: equal to cv2.cvtColor on all 2^24 colours)
        std::vector<uint8_t> gray;
        const uint8_t* g = pixels;
        size_t gstride = stride;
        if (layout != Layout::GRAY) {
            gray.resize(static_cast<size_t>(w) * h);
            const bool rgb_first = layout == Layout::RGB || layout == Layout::RGBA;
            for (int y = 0; y < h; ++y) {
                const uint8_t* p = pixels + static_cast<size_t>(y) * stride;
                for (int x = 0; x < w; ++x, p += src_cn) {
                    int b = rgb_first ? p[2] : p[0], gg = p[1], r = rgb_first ? p[0] : p[2];
                    gray[static_cast<size_t>(y) * w + x] = static_cast<uint8_t>((b * 3735 + gg * 19235 + r * 9798 + (1 << 14)) >> 15);
                }
            }
            g = gray.data();
            gstride = static_cast<size_t>(w);
        }
        std::vector<uint8_t> one(net);
        resize_u8(c, g, w, h, gstride, 1, one.data());
        // a gray frame on a 3-channel network: the replicated channels resize identically
        for (size_t i = 0; i < net; ++i)
            for (int k = 0; k < c.in_channels; ++k) resized[i * c.in_channels + k] = one[i];
    } else {
        // 3 channels in the network's order (the frame's alpha dropped)
        const bool frame_rgb = layout == Layout::RGB || layout == Layout::RGBA;
        const bool want_rgb = c.channel_order == "rgb";
        std::vector<uint8_t> img;
        const uint8_t* src = pixels;
        size_t sstride = stride;
        if (src_cn != 3 || frame_rgb != want_rgb) {
            img.resize(static_cast<size_t>(w) * h * 3);
            for (int y = 0; y < h; ++y) {
                const uint8_t* p = pixels + static_cast<size_t>(y) * stride;
                uint8_t* q = img.data() + static_cast<size_t>(y) * w * 3;
                for (int x = 0; x < w; ++x, p += src_cn, q += 3) {
                    if (frame_rgb == want_rgb) { q[0] = p[0]; q[1] = p[1]; q[2] = p[2]; }
                    else { q[0] = p[2]; q[1] = p[1]; q[2] = p[0]; }
                }
            }
            src = img.data();
            sstride = static_cast<size_t>(w) * 3;
        }
        resize_u8(c, src, w, h, sstride, 3, resized.data());
    }
    normalize(c, resized.data(), out);
}

// ---------------------------------------------------------------------------------------------
// logits -> probability, mask
void postprocess(const Contract& c, const float* logits, int classes, int out_w, int out_h, float* probability,
                 uint8_t* mask) {
    const size_t net = static_cast<size_t>(c.height) * c.width;
    std::vector<float> prob(net * classes);   // H x W x C at network size
    for (int k = 0; k < classes; ++k)
        for (size_t i = 0; i < net; ++i) prob[i * classes + k] = 1.0f / (1.0f + std::exp(-logits[k * net + i]));
    const size_t n = static_cast<size_t>(out_w) * out_h * classes;
    std::vector<float> own;
    float* p = probability;
    if (!p) {
        own.resize(n);
        p = own.data();
    }
    resize_linear_f32(prob.data(), c.width, c.height, classes, p, out_w, out_h);
    if (mask) {
        const float t = static_cast<float>(c.threshold);
        for (size_t i = 0; i < n; ++i) mask[i] = p[i] > t ? 1 : 0;
    }
}

}  // namespace cmunext::detail
