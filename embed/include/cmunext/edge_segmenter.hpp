// cmunext::EdgeSegmenter: an exported CMUNeXt artifact (.xml OpenVINO IR or .onnx), checked and
// run with OpenVINO's C++ runtime, the same contract and checks as the Python class
// cmunext_edge.EdgeSegmenter.
//
//   cmunext::EdgeSegmenter seg("exports/cmunext-s-busi_fp32.xml");   // verified before use
//   cmunext::Frame f{pixels, width, height, stride, cmunext::PixelFormat::BGR8};
//   cmunext::Segmentation r = seg.segment(f);   // r.mask: height x width (x classes), 0/1
//
// Trust policy (Options::trusted_keys or $CMUNEXT_TRUSTED_KEYS): before anything else the signature
// beside the artifact must verify with a trusted key and vouch for every file (ErrorCode::Integrity
// otherwise), as in Python (docs/signing.md).
// Verified load (on unless Options::verify is false): the artifact's files are compared with the
// sha256 in manifest.json beside it (or, without a manifest entry or beside a damaged manifest, named
// in ArtifactInfo::manifest_problem, with the content hash embedded at export); then the self-test embedded at export runs on the device and must agree with the
// output recorded at export. Any mismatch throws cmunext::Error with code IntegrityError and the
// artifact never runs.
//
// Threads: segment() and segment_batch() may be called from several threads at once. Pre- and
// post-processing run in the calling thread; inference is serialised per EdgeSegmenter (one
// OpenVINO infer request). For parallel inference create one EdgeSegmenter per thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(_WIN32)
#define CMUNEXT_API __declspec(dllexport)
#else
#define CMUNEXT_API __attribute__((visibility("default")))
#endif

namespace cmunext {

enum class ErrorCode {
    InvalidArgument = 1,   // a bad frame, option or path
    Io = 2,                // a file that cannot be read
    Integrity = 3,         // hash or self-test mismatch: the artifact was refused
    Unsupported = 4,       // an artifact kind or contract this runtime does not implement
    Runtime = 5,           // OpenVINO could not read, compile or run the model, or its output was NaN/inf
};

class CMUNEXT_API Error : public std::runtime_error {
public:
    Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
    ErrorCode code() const noexcept { return code_; }
private:
    ErrorCode code_;
};

enum class PixelFormat { BGR8, RGB8, GRAY8, BGRA8, RGBA8 };

// A decoded frame in memory: `height` rows of `width` pixels, rows `stride` bytes apart
// (stride >= width * channels). The library never keeps the pointer after a call returns.
struct Frame {
    const uint8_t* data = nullptr;
    int width = 0;
    int height = 0;
    size_t stride = 0;          // 0: tightly packed rows
    PixelFormat format = PixelFormat::BGR8;
};

struct Options {
    std::string device = "CPU";     // OpenVINO device: CPU, GPU, NPU, AUTO (a missing one falls back to CPU)
    bool strict_device = false;     // refuse instead of falling back
    bool verify = true;             // file hashes + embedded self-test before first use
    int threads = 0;                // INFERENCE_NUM_THREADS (0: the artifact's stored setting or OpenVINO's)
    std::string cache_dir;          // OpenVINO compiled-model cache folder, created if missing ("" none); a path
                                    // that is not a folder (a file) is refused at open, and so is any cache
                                    // under a trust policy
    int64_t max_pixels = 40000000;  // largest frame accepted (width * height); 0 for no limit
    // Trust policy: PEM public keys (P-256/384/521) whose signature `<artifact>.sig` must vouch for
    // every file before anything parses it (also with verify off). Empty: $CMUNEXT_TRUSTED_KEYS
    // (paths separated by ':'), else no policy. Needs a build with OpenSSL; one without refuses
    // any policy (ErrorCode::Unsupported) rather than ignore it.
    std::vector<std::string> trusted_keys;
};

struct Segmentation {
    int width = 0, height = 0, classes = 1;
    std::vector<uint8_t> mask;         // height x width x classes, 1 = foreground (probability > threshold)
    std::vector<float> probability;    // height x width x classes, sigmoid probability at the frame's size
    std::vector<float> logits;         // classes x net_height x net_width (network size)
    double preprocess_ms = 0, infer_ms = 0, postprocess_ms = 0, total_ms = 0;
};

struct SelfTestResult {
    std::string status;                // "pass", "fail" or "unavailable"
    std::string message;
    double mask_dice = -1;             // mean over classes, against the mask recorded at export
    double max_pooled_logit_delta = -1;
    bool exact_mask_match = false;
    double min_agreement = -1;
    bool passed() const { return status == "pass"; }
};

struct ArtifactInfo {
    std::string path;
    std::string kind;                  // "openvino-ir" or "onnx"
    std::string precision;             // artifact precision (metadata)
    std::string run_precision;         // what actually runs (e.g. fp32, int8)
    std::string float_precision;       // OpenVINO's inference precision, read back: what the float
                                       // layers run at (an INT8 IR's too); "" if the plugin hides it
    std::string device;                // device that runs it
    std::string fallback;              // why it runs elsewhere than asked ("" if it does not)
    std::string contract_json;         // the preprocessing contract, JSON as embedded
    double threshold = 0.5;
    int net_height = 0, net_width = 0, in_channels = 3, classes = 1;
    std::string variant, toolkit_version, source_sha256;
    std::string verified;              // "" when not verified, else how ("manifest" or "embedded" sha256 + self-test)
    std::string signature;             // "signed by trusted key <fingerprint>", "unsigned" or "signed, not checked (no trusted key)"
    SelfTestResult selftest;           // result of the verified load's self-test
    std::string manifest_problem;      // "DIR/manifest.json is damaged: <why>" when the one beside it is (then
                                       // the embedded hash vouched for the files, or the load was refused); else ""
};

class CMUNEXT_API EdgeSegmenter {
public:
    explicit EdgeSegmenter(const std::string& artifact, const Options& options = Options());
    ~EdgeSegmenter();
    // A moved-from EdgeSegmenter holds nothing: its calls throw cmunext::Error (InvalidArgument).
    EdgeSegmenter(EdgeSegmenter&&) noexcept;
    EdgeSegmenter& operator=(EdgeSegmenter&&) noexcept;
    EdgeSegmenter(const EdgeSegmenter&) = delete;
    EdgeSegmenter& operator=(const EdgeSegmenter&) = delete;

    Segmentation segment(const Frame& frame);
    // frames inferred `batch_size` at a time (a static-batch artifact is split or padded)
    std::vector<Segmentation> segment_batch(const std::vector<Frame>& frames, int batch_size = 8);
    // Fills caller-owned buffers (width*height*classes each, either may be null): no allocation
    // of result buffers, for the C ABI and firmware that manages its own memory.
    void segment_into(const Frame& frame, uint8_t* mask, float* probability, double timings_ms[4] = nullptr);
    // The same with each buffer's size: frame_size bytes readable at frame.data ((height - 1) x stride +
    // width x channels needed), mask_size bytes and probability_size floats (width*height*classes each,
    // where not null). A buffer too small throws Error (InvalidArgument) naming what it needs, before
    // anything is read or written; SIZE_MAX: not known (trusted, as the overload above).
    void segment_into(const Frame& frame, size_t frame_size, uint8_t* mask, size_t mask_size, float* probability,
                      size_t probability_size, double timings_ms[4] = nullptr);

    // The network input the contract makes of `frame` (in_channels x net_height x net_width floats,
    // bit-identical to the Python PreprocessSpec.preprocess of the same pixels): for checking a port.
    std::vector<float> preprocess(const Frame& frame) const;

    // runs the embedded self-test again on this device
    SelfTestResult self_test();
    const ArtifactInfo& info() const;
    std::string describe() const;       // one line: artifact, device, precision, verification

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    Impl& impl() const;     // impl_, or Error for a moved-from object
    void segment_into_unguarded(const Frame& frame, size_t frame_size, uint8_t* mask, size_t mask_size,
                                float* probability, size_t probability_size, double timings_ms[4]);
    std::vector<Segmentation> segment_batch_unguarded(const std::vector<Frame>& frames, int batch_size);
};

CMUNEXT_API const char* version();
// whether this build checks signatures (built with OpenSSL): a trust policy needs it
CMUNEXT_API bool signatures_supported();

}  // namespace cmunext
