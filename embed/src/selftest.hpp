// The self-test every export embeds (cmunext_edge artifact metadata, key cmunext_edge.selftest):
// a fixed input regenerated from a seed and checked by its sha256, and a digest of the output the
// artifact gave on the export host (8x8 average-pooled logits, the thresholded mask as
// zlib-compressed bits). The check compares "same as at export", never agreement with PyTorch.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cmunext/edge_segmenter.hpp"
#include "contract.hpp"
#include "json.hpp"

namespace cmunext::detail {

// Minimum mean mask Dice agreement per precision (export verification and self-test)
double agreement_threshold(const std::string& precision, bool* known = nullptr);

// The 1 x C x H x W self-test input for `c` and `seed`: an ultrasound-like dark ellipse on seeded
// speckle, preprocessed by the contract (artifact_meta.selftest_input).
std::vector<float> selftest_input(const Contract& c, uint64_t seed);

// Per input channel, statistics of a fixed colour probe preprocessed by `c` (mean / std and squared
// column / row steps / variance): what shows a changed channel order or resize
// (artifact_meta.contract_probe; compared within 0.01).
std::vector<double> contract_probe(const Contract& c);

// Runs `run` (1 x C x H x W input -> 1 x K x H x W logits) on the embedded input and compares with
// the digest; `selftest` null = the artifact has none ("unavailable"). `precision`: what actually
// runs (a lower precision than the artifact's lowers the agreement needed to that precision's).
SelfTestResult check_selftest(const Json* selftest, const Contract& c,
                              const std::function<std::vector<float>(const std::vector<float>&)>& run,
                              const std::string& precision);

}  // namespace cmunext::detail
