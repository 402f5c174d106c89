#include "selftest.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "codec.hpp"
#include "numpy_compat.hpp"

namespace cmunext::detail {

namespace {
constexpr int kPool = 8;
constexpr double kProbeTolerance = 0.01;   // artifact_meta.PROBE_TOLERANCE

struct Damaged : std::runtime_error {
    using std::runtime_error::runtime_error;
};

std::string fmt(const char* f, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, f, v);
    return buf;
}

// Python's "%.4g"
std::string g4(double v) { return fmt("%.4g", v); }

const Json& need(const Json& st, const char* key) {
    const Json* v = st.find(key);
    if (!v) throw Damaged(std::string("KeyError: '") + key + "'");
    return *v;
}
}  // namespace

double agreement_threshold(const std::string& precision, bool* known) {
    if (known) *known = true;
    if (precision == "fp32") return 0.999;
    if (precision == "fp16" || precision == "bf16") return 0.99;
    if (precision == "int8") return 0.97;
    if (known) *known = false;
    return 0.97;
}

std::vector<float> selftest_input(const Contract& c, uint64_t seed) {
    const int h = c.height, w = c.width;
    Pcg64 rng(seed);
    // the gray image, exactly as numpy computes it: float32 geometry, float64 speckle, truncation
    const float cy = static_cast<float>(0.55 * h), ry = static_cast<float>(0.22 * h);
    const float cx = static_cast<float>(0.45 * w), rx = static_cast<float>(0.3 * w);
    std::vector<uint8_t> bgr(static_cast<size_t>(h) * w * 3);
    for (int y = 0; y < h; ++y) {
        const float yy = static_cast<float>(y);
        const float dy = (yy - cy) / ry;
        const float wave = 30.0f * numpy_sinf(yy / 9.0f);
        for (int x = 0; x < w; ++x) {
            const float dx = (static_cast<float>(x) - cx) / rx;
            const bool inside = dy * dy + dx * dx < 1.0f;
            const double base = (inside ? 40.0 : 140.0) + static_cast<double>(wave);
            const double noise = 0.0 + 25.0 * standard_normal(rng);
            double v = base + noise;
            v = v < 0.0 ? 0.0 : (v > 255.0 ? 255.0 : v);
            const uint8_t g = static_cast<uint8_t>(v);   // astype(uint8): truncation
            uint8_t* p = &bgr[(static_cast<size_t>(y) * w + x) * 3];
            p[0] = p[1] = p[2] = g;
        }
    }
    std::vector<float> x(static_cast<size_t>(c.in_channels) * h * w);
    preprocess(c, bgr.data(), w, h, static_cast<size_t>(w) * 3, Layout::BGR, x.data());
    return x;
}

std::vector<double> contract_probe(const Contract& c) {
    const int h = c.height / 4 + 3, w = c.width * 5 / 2 + 7;
    std::vector<uint8_t> bgr(static_cast<size_t>(h) * w * 3);
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) {
            uint8_t* p = &bgr[(static_cast<size_t>(y) * w + x) * 3];
            p[0] = static_cast<uint8_t>((x * 7 + y * 29) % 256);
            p[1] = static_cast<uint8_t>(((x / 3) * 37 + y * 11) % 256);
            p[2] = static_cast<uint8_t>(((x * y) / 5 + 60) % 256);
        }
    const size_t plane = static_cast<size_t>(c.height) * c.width;
    std::vector<float> t(static_cast<size_t>(c.in_channels) * plane);
    preprocess(c, bgr.data(), w, h, static_cast<size_t>(w) * 3, Layout::BGR, t.data());
    std::vector<double> stats;
    for (int k = 0; k < c.in_channels; ++k) {
        const float* v = &t[k * plane];
        double sum = 0.0;
        for (size_t i = 0; i < plane; ++i) sum += v[i];
        const double mean = sum / static_cast<double>(plane);
        double sq = 0.0, dx = 0.0, dy = 0.0;
        for (size_t i = 0; i < plane; ++i) sq += (v[i] - mean) * (v[i] - mean);
        for (int y = 0; y < c.height; ++y)
            for (int x = 0; x < c.width; ++x) {
                const size_t i = static_cast<size_t>(y) * c.width + x;
                if (x + 1 < c.width) dx += (v[i + 1] - static_cast<double>(v[i])) * (v[i + 1] - static_cast<double>(v[i]));
                if (y + 1 < c.height) dy += (v[i + c.width] - static_cast<double>(v[i])) * (v[i + c.width] - static_cast<double>(v[i]));
            }
        const double var = std::max(sq / static_cast<double>(plane), 1e-30);
        stats.push_back(mean / std::sqrt(var));
        stats.push_back(dx / (static_cast<double>(c.height) * (c.width - 1)) / var);
        stats.push_back(dy / (static_cast<double>(c.height - 1) * c.width) / var);
    }
    return stats;
}

namespace {
std::vector<uint8_t> packbits(const std::vector<uint8_t>& bits) {
    std::vector<uint8_t> out((bits.size() + 7) / 8, 0);
    for (size_t i = 0; i < bits.size(); ++i)
        if (bits[i]) out[i / 8] |= static_cast<uint8_t>(0x80 >> (i % 8));
    return out;
}

SelfTestResult check(const Json& st, const Contract& c,
                     const std::function<std::vector<float>(const std::vector<float>&)>& run,
                     const std::string& precision) {
    SelfTestResult r;
    const Json* recorded = st.find("preprocess");
    if (recorded) {
        Json was = *recorded;
        if (was.is_string()) {
            try {
                was = Json::parse(was.as_string());
            } catch (const JsonError& e) {
                throw Damaged(std::string("JSONDecodeError: ") + e.what());
            }
        }
        if (!was.is_object()) throw Damaged("ValueError: the recorded contract is not a JSON object");
        std::vector<std::string> differs = c.differences(was);
        if (!differs.empty()) {
            r.status = "fail";
            r.message = "self-test FAILED: the artifact's preprocessing contract was changed after export: ";
            for (size_t i = 0; i < differs.size(); ++i) r.message += (i ? ", " : "") + differs[i];
            return r;
        }
    }
    if (const Json* probe = st.find("contract_probe")) {   // artifacts exported before 2026-12-06 have none
        const std::vector<double> now = contract_probe(c);
        const std::string bad = "ValueError: contract_probe must be a list of " + std::to_string(now.size()) + " numbers";
        if (!probe->is_array() || probe->as_array().size() != now.size()) throw Damaged(bad);
        double moved = 0.0;
        for (size_t i = 0; i < now.size(); ++i) {
            const Json& v = probe->as_array()[i];
            if (!v.is_number()) throw Damaged(bad);
            moved = std::max(moved, std::fabs(now[i] - v.as_number()));
        }
        if (!(moved <= kProbeTolerance)) {
            r.status = "fail";
            r.message = "self-test FAILED: the preprocessing does not resize or order channels as at export (a "
                        "statistic of the contract probe moved by " + fmt("%.3g", moved) +
                        ", tolerance 0.01): the contract was changed after export";
            return r;
        }
    }
    const Json& seed_j = need(st, "seed");
    if (!seed_j.is_number() || seed_j.as_number() < 0 || seed_j.as_number() != std::floor(seed_j.as_number()) ||
        seed_j.as_number() > 1.8e19)
        throw Damaged("ValueError: seed must be a non-negative integer");
    const uint64_t seed = static_cast<uint64_t>(seed_j.as_number());
    std::vector<float> x = selftest_input(c, seed);
    const Json& in_sha = need(st, "input_sha256");
    if (!in_sha.is_string()) throw Damaged("TypeError: input_sha256 must be a string");
    if (sha256_hex(x.data(), x.size() * sizeof(float)) != in_sha.as_string()) {
        r.status = "fail";
        r.message = "self-test input could not be regenerated identically on this machine (this C++ runtime's "
                    "regeneration differs from numpy's on the export host); the comparison would be meaningless";
        return r;
    }
    std::vector<float> logits = run(x);
    const size_t plane = static_cast<size_t>(c.height) * c.width;
    if (logits.empty() || logits.size() % plane) throw std::runtime_error("self-test: unexpected output size");
    const int classes = static_cast<int>(logits.size() / plane);
    const double cut_d = recorded ? std::log(c.threshold / (1.0 - c.threshold)) : 0.0;
    const float cut = static_cast<float>(cut_d);   // numpy compares float32 logits with the cut as float32
    std::vector<uint8_t> mask(logits.size());
    bool finite = true;
    for (size_t i = 0; i < logits.size(); ++i) {
        mask[i] = logits[i] > cut ? 1 : 0;
        if (!std::isfinite(logits[i])) finite = false;
    }
    // expected mask from the digest
    const Json& bits_j = need(st, "mask_bits");
    if (!bits_j.is_string()) throw Damaged("TypeError: mask_bits must be a string");
    std::vector<uint8_t> packed;
    std::vector<uint8_t> expected_packed;
    try {
        packed = base64_decode(bits_j.as_string());
        expected_packed = zlib_decompress(packed.data(), packed.size(), (mask.size() + 7) / 8 + 64);
    } catch (const CodecError& e) {
        throw Damaged(std::string("Error: ") + e.what());
    }
    if (expected_packed.size() * 8 < mask.size())
        throw Damaged("ValueError: mask_bits hold " + std::to_string(expected_packed.size() * 8) +
                      " bits, the output has " + std::to_string(mask.size()));
    double dice_sum = 0.0;
    for (int k = 0; k < classes; ++k) {
        size_t inter = 0, uni = 0;
        for (size_t i = 0; i < plane; ++i) {
            size_t idx = k * plane + i;
            bool e = (expected_packed[idx / 8] >> (7 - idx % 8)) & 1;
            bool m = mask[idx];
            inter += (m && e);
            uni += (m || e);
        }
        double iou = (static_cast<double>(inter) + 1e-5) / (static_cast<double>(uni) + 1e-5);
        dice_sum += 2 * iou / (iou + 1);
    }
    const double dice = dice_sum / classes;
    // pooled logits: classes x 8 x 8 block means
    const Json& pooled = need(st, "pooled_logits");
    if (!pooled.is_array() || static_cast<int>(pooled.as_array().size()) != classes)
        throw Damaged("ValueError: pooled_logits do not match the output's classes");
    double delta = 0.0;
    const int bh = c.height / kPool, bw = c.width / kPool;
    for (int k = 0; k < classes; ++k) {
        const Json& rows = pooled.as_array()[k];
        if (!rows.is_array() || rows.as_array().size() != kPool) throw Damaged("ValueError: pooled_logits shape");
        for (int py = 0; py < kPool; ++py) {
            const Json& row = rows.as_array()[py];
            if (!row.is_array() || row.as_array().size() != kPool) throw Damaged("ValueError: pooled_logits shape");
            for (int px = 0; px < kPool; ++px) {
                const Json& v = row.as_array()[px];
                if (!v.is_number()) throw Damaged("ValueError: pooled_logits must be numbers");
                double sum = 0.0;
                for (int y = py * bh; y < (py + 1) * bh; ++y)
                    for (int xx = px * bw; xx < (px + 1) * bw; ++xx) sum += logits[k * plane + y * c.width + xx];
                double mean = static_cast<float>(sum / (bh * bw));
                // in double, as Python: a recorded value beyond float's range is a large delta, not UB
                delta = std::max(delta, std::fabs(mean - v.as_number()));
            }
        }
    }
    const Json& mask_sha = need(st, "mask_sha256");
    if (!mask_sha.is_string()) throw Damaged("TypeError: mask_sha256 must be a string");
    std::vector<uint8_t> mine = packbits(mask);
    const bool exact = sha256_hex(mine.data(), mine.size()) == mask_sha.as_string();
    const Json* st_prec = st.find("precision");
    const std::string recorded_prec = st_prec && st_prec->is_string() ? st_prec->as_string() : "";
    // the recorded floor, never below its precision's (an edited min_agreement cannot lower it);
    // an unknown precision gets the lowest floor (0.97)
    const double floor = agreement_threshold(recorded_prec, nullptr);
    double need_agree = floor;
    if (const Json* m = st.find("min_agreement")) {
        if (!m->is_number()) throw Damaged("ValueError: min_agreement must be a number");
        need_agree = m->as_number();
    }
    if (!(need_agree >= floor)) need_agree = floor;      // NaN too
    bool known = false;
    double run_floor = agreement_threshold(precision, &known);
    if (known && precision != recorded_prec) need_agree = std::min(need_agree, run_floor);
    const bool ok = (exact || dice >= need_agree) && finite;
    r.status = ok ? "pass" : "fail";
    r.mask_dice = dice;
    r.max_pooled_logit_delta = delta;
    r.exact_mask_match = exact;
    r.min_agreement = need_agree;
    r.message = std::string("self-test ") + (ok ? "passed" : "FAILED") +
                " (same as at export: compared with this artifact's own output on the export host, not with "
                "PyTorch): mask Dice agreement " + fmt("%.4f", dice) + " (" + (ok ? ">=" : "<") + " " +
                fmt("%g", need_agree) + "), max pooled logit delta " + g4(delta) +
                (exact ? ", masks identical" : "") + (finite ? "" : ", output has NaN/inf");
    return r;
}
}  // namespace

SelfTestResult check_selftest(const Json* selftest, const Contract& c,
                              const std::function<std::vector<float>(const std::vector<float>&)>& run,
                              const std::string& precision) {
    if (!selftest) {
        SelfTestResult r;
        r.status = "unavailable";
        r.message = "artifact has no embedded self-test (only exported artifacts carry one; re-export with cmunext-export)";
        return r;
    }
    try {
        if (!selftest->is_object()) throw Damaged("TypeError: the self-test is not a JSON object");
        return check(*selftest, c, run, precision);
    } catch (const Damaged& e) {
        SelfTestResult r;
        r.status = "fail";
        r.message = std::string("self-test FAILED: the embedded self-test data is damaged (") + e.what() + ")";
        return r;
    }
}

}  // namespace cmunext::detail
