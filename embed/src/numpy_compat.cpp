#include "numpy_compat.hpp"

#include <cmath>

namespace cmunext::detail {

// ---------------------------------------------------------------------------------------------
// SeedSequence (numpy/random/bit_generator.pyx): a 4-word uint32 pool mixed from the entropy
namespace {
constexpr uint32_t kInitA = 0x43b0d7e5, kMultA = 0x931e8875, kInitB = 0x8b51f9dd, kMultB = 0x58f38ded;
constexpr uint32_t kMixMultL = 0xca01f9dd, kMixMultR = 0x4973f715;
constexpr int kXShift = 16;
constexpr int kPoolSize = 4;
}  // namespace

std::vector<uint64_t> seed_sequence_state(uint64_t seed, int n_words) {
    // the entropy as little-endian uint32 words (0 -> [0])
    std::vector<uint32_t> entropy;
    do {
        entropy.push_back(static_cast<uint32_t>(seed & 0xFFFFFFFFu));
        seed >>= 32;
    } while (seed);

    uint32_t hash_const = kInitA;
    auto hashmix = [&hash_const](uint32_t value) {
        value ^= hash_const;
        hash_const *= kMultA;
        value *= hash_const;
        value ^= value >> kXShift;
        return value;
    };
    auto mix = [](uint32_t x, uint32_t y) {
        uint32_t r = kMixMultL * x - kMixMultR * y;
        r ^= r >> kXShift;
        return r;
    };
    uint32_t pool[kPoolSize];
    for (int i = 0; i < kPoolSize; ++i)
        pool[i] = hashmix(i < static_cast<int>(entropy.size()) ? entropy[i] : 0u);
    for (int src = 0; src < kPoolSize; ++src)
        for (int dst = 0; dst < kPoolSize; ++dst)
            if (src != dst) pool[dst] = mix(pool[dst], hashmix(pool[src]));
    for (size_t src = kPoolSize; src < entropy.size(); ++src)
        for (int dst = 0; dst < kPoolSize; ++dst) pool[dst] = mix(pool[dst], hashmix(entropy[src]));

    uint32_t hash_b = kInitB;
    std::vector<uint32_t> words(static_cast<size_t>(n_words) * 2);
    for (size_t i = 0; i < words.size(); ++i) {
        uint32_t v = pool[i % kPoolSize];
        v ^= hash_b;
        hash_b *= kMultB;
        v *= hash_b;
        v ^= v >> kXShift;
        words[i] = v;
    }
    std::vector<uint64_t> out(static_cast<size_t>(n_words));
    for (int i = 0; i < n_words; ++i) out[i] = uint64_t(words[2 * i]) | (uint64_t(words[2 * i + 1]) << 32);
    return out;
}

// ---------------------------------------------------------------------------------------------
// PCG64
namespace {
using u128 = unsigned __int128;
constexpr u128 kPcgMult = (u128(2549297995355413924ULL) << 64) | 4865540595714422341ULL;
}  // namespace

Pcg64::Pcg64(uint64_t seed) {
    std::vector<uint64_t> s = seed_sequence_state(seed, 4);
    u128 initstate = (u128(s[0]) << 64) | s[1];
    u128 initseq = (u128(s[2]) << 64) | s[3];
    state_ = 0;
    inc_ = (initseq << 1) | 1;
    step();
    state_ += initstate;
    step();
}

void Pcg64::step() { state_ = state_ * kPcgMult + inc_; }

uint64_t Pcg64::next_uint64() {
    step();
    uint64_t x = static_cast<uint64_t>(state_ >> 64) ^ static_cast<uint64_t>(state_);
    unsigned rot = static_cast<unsigned>(state_ >> 122);
    return (x >> rot) | (x << ((64 - rot) & 63));
}

double Pcg64::next_double() { return static_cast<double>(next_uint64() >> 11) * (1.0 / 9007199254740992.0); }

// ---------------------------------------------------------------------------------------------
// Ziggurat for the standard normal, 256 layers (Marsaglia & Tsang 2000, the layout numpy uses:
// 8 bits layer index, 1 sign bit, 52 bits magnitude). The tables are computed here from the
// layer edge r and the layer area v; they agree with numpy's stored tables to a few ulps, which
// changes a 52-bit-magnitude sample by far less than one step of the 8-bit self-test image (the
// input's sha256 then proves the regenerated image identical).
namespace {
constexpr double kZigR = 3.6541528853610087963519472518;

struct ZigguratTables {
    uint64_t ki[256];
    double wi[256];
    double fi[256];
    ZigguratTables() {
        const double m = 4503599627370496.0;   // 2^52
        auto f = [](double x) { return std::exp(-0.5 * x * x); };
        const double v = kZigR * f(kZigR) + std::sqrt(M_PI / 2.0) * std::erfc(kZigR / std::sqrt(2.0));
        double dn = kZigR, tn = dn;
        const double q = v / f(dn);
        ki[0] = static_cast<uint64_t>((dn / q) * m);
        ki[1] = 0;
        wi[0] = q / m;
        wi[255] = dn / m;
        fi[0] = 1.0;
        fi[255] = f(dn);
        for (int i = 254; i >= 1; --i) {
            dn = std::sqrt(-2.0 * std::log(v / dn + f(dn)));
            ki[i + 1] = static_cast<uint64_t>((dn / tn) * m);
            tn = dn;
            fi[i] = f(dn);
            wi[i] = dn / m;
        }
    }
};

const ZigguratTables& zig() {
    static const ZigguratTables t;
    return t;
}
}  // namespace

double standard_normal(Pcg64& rng) {
    const ZigguratTables& t = zig();
    for (;;) {
        uint64_t r = rng.next_uint64();
        int idx = static_cast<int>(r & 0xff);
        r >>= 8;
        int sign = static_cast<int>(r & 0x1);
        uint64_t rabs = (r >> 1) & 0x000fffffffffffffULL;
        double x = static_cast<double>(rabs) * t.wi[idx];
        if (sign) x = -x;
        if (rabs < t.ki[idx]) return x;
        if (idx == 0) {
            for (;;) {
                double xx = -(1.0 / kZigR) * std::log1p(-rng.next_double());
                double yy = -std::log1p(-rng.next_double());
                if (yy + yy > xx * xx) return ((rabs >> 8) & 0x1) ? -(kZigR + xx) : kZigR + xx;
            }
        } else {
            if (((t.fi[idx - 1] - t.fi[idx]) * rng.next_double() + t.fi[idx]) < std::exp(-0.5 * x * x)) return x;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// float32 sin as numpy computes it with FMA (Cody-Waite reduction, polynomials on [-pi/4, pi/4])
float numpy_sinf(float x) {
    if (std::isnan(x)) return x;
    if (!(std::fabs(x) <= 117435.992f)) return std::sin(x);   // numpy hands these to the C library
    const float two_over_pi = 0x1.45f306p-1f;
    const float magic = 0x1.800000p+23f;
    volatile float q = x * two_over_pi;    // volatile: keep the round-to-integer trick un-fused
    q = q + magic;
    float quadrant = q - magic;
    float r = std::fmaf(quadrant, -0x1.921fb0p+00f, x);
    r = std::fmaf(quadrant, -0x1.5110b4p-22f, r);
    r = std::fmaf(quadrant, -0x1.846988p-48f, r);
    const float r2 = r * r;

    float c = std::fmaf(0x1.98e616p-16f, r2, -0x1.6c06dcp-10f);
    c = std::fmaf(c, r2, 0x1.55553cp-05f);
    c = std::fmaf(c, r2, -0x1.000000p-01f);
    c = std::fmaf(c, r2, 0x1.000000p+00f);

    float s = std::fmaf(0x1.7d3bbcp-19f, r2, -0x1.a06bbap-13f);
    s = std::fmaf(s, r2, 0x1.11119ap-07f);
    s = std::fmaf(s, r2, -0x1.555556p-03f);
    s = std::fmaf(s, r2, 0.0f);
    s = std::fmaf(s, r, r);

    const int iq = static_cast<int>(std::nearbyint(quadrant));
    float out = (iq & 1) == 0 ? s : c;
    if ((iq & 2) == 2) out = 0.0f - out;
    return out;
}

}  // namespace cmunext::detail
