// The few numpy routines that define the embedded self-test input (artifact_meta.selftest_input):
// numpy.random.default_rng(seed) (SeedSequence -> PCG64) and Generator.normal, and numpy's float32
// sin. The self-test stores the sha256 of that input, so these must reproduce numpy's values, not
// just approximate them; the check compares the hash and refuses on any difference.
#pragma once

#include <cstdint>
#include <vector>

namespace cmunext::detail {

// numpy.random.SeedSequence(seed).generate_state(n_words, numpy.uint64) for an integer seed >= 0
std::vector<uint64_t> seed_sequence_state(uint64_t seed, int n_words);

// numpy.random.PCG64 (PCG XSL-RR 128/64) seeded the way numpy.random.default_rng(seed) seeds it
class Pcg64 {
public:
    explicit Pcg64(uint64_t seed);
    uint64_t next_uint64();
    double next_double();          // [0, 1), 53 bits, as numpy's next_double
private:
    void step();
    unsigned __int128 state_ = 0;
    unsigned __int128 inc_ = 0;
};

// Generator.standard_normal (numpy's 256-layer ziggurat) drawing from `rng`
double standard_normal(Pcg64& rng);

// numpy's float32 sin on CPUs with fused multiply-add (x86-64 with FMA3, AArch64): Cody-Waite
// reduction by pi/2 and minimax polynomials, every step a fused multiply-add; |x| beyond the
// reduction's range falls back to the C library, as numpy does.
float numpy_sinf(float x);

}  // namespace cmunext::detail
