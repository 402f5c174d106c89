#include "cmunext/edge_segmenter.hpp"

#include <algorithm>
#include <filesystem>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>

#include <openvino/openvino.hpp>

#include "contract.hpp"
#include "integrity.hpp"
#include "json.hpp"
#include "selftest.hpp"
#include "signature.hpp"

#ifndef CMUNEXT_VERSION
#define CMUNEXT_VERSION "0.0.0"
#endif

namespace cmunext {

using detail::Contract;
using detail::Json;

const char* version() { return CMUNEXT_VERSION; }
bool signatures_supported() { return detail::signatures_supported(); }

namespace {

const char* const kPrefix = "cmunext_edge.";
const char* const kMetaKeys[] = {"format_version", "preprocess", "variant", "in_channels", "num_classes", "threshold",
                                 "source_sha256", "toolkit_version", "precision", "target", "selftest", "runtime",
                                 "graph", "content_sha256"};
constexpr int kMaxSide = 1 << 16;

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// A runtime library's message as one line of at most 400 characters (OpenVINO's span several lines)
std::string one_line(std::string what) {
    for (char& ch : what) if (ch == '\n' || ch == '\r') ch = ' ';
    return what.size() > 400 ? what.substr(0, 400) + "..." : what;
}

std::string upper(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    return s;
}

// ONEDNN_MAX_CPU_ISA at a level without AVX-512 BF16 takes BF16 from oneDNN while OpenVINO's CPU
// capabilities (CPUID) still list it, and a bf16 compile then fails: such a limit means "no native
// BF16", as capabilities.py's ONEDNN_LEVELS say for the Python backend.
bool isa_limit_excludes_bf16() {
    const char* limit = std::getenv("ONEDNN_MAX_CPU_ISA");
    if (!limit || !*limit) return false;
    static const char* const kWithoutBf16[] = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2",
                                               "AVX512_CORE", "AVX512_CORE_VNNI"};
    const std::string level = upper(limit);
    return std::any_of(std::begin(kWithoutBf16), std::end(kWithoutBf16),
                       [&](const char* l) { return level == l; });
}

// the cmunext_edge.* metadata: rt_info["model_info"] (IR) or rt_info["framework"] (ONNX metadata_props)
std::map<std::string, std::string> read_metadata(const std::shared_ptr<ov::Model>& model) {
    std::map<std::string, std::string> out;
    for (const char* section : {"model_info", "framework"}) {
        for (const char* key : kMetaKeys) {
            const std::string full = std::string(kPrefix) + key;
            if (out.count(key)) continue;
            try {
                if (model->has_rt_info(section, full)) out[key] = model->get_rt_info<ov::Any>(section, full).as<std::string>();
            } catch (const std::exception&) {
                // a section that is not a map: nothing of ours there
            }
        }
    }
    return out;
}

int parse_int(const std::string& path, const std::string& s, const char* what) {
    char* end = nullptr;
    long v = std::strtol(s.c_str(), &end, 10);
    if (s.empty() || *end || v < 1 || v > 4096)
        throw Error(ErrorCode::Unsupported, path + ": artifact metadata " + what + " '" + s + "' is not a valid count");
    return static_cast<int>(v);
}

// Options::cache_dir names a folder: a path that exists and is not one (a file, a FIFO) is refused
// before anything is read (OpenVINO took a file silently and cached nothing).
void check_cache_dir(const std::string& dir) {
    std::error_code ec;
    const std::filesystem::file_status st = std::filesystem::status(dir, ec);
    if (dir.empty() || !std::filesystem::exists(st) || std::filesystem::is_directory(st)) return;
    throw Error(ErrorCode::InvalidArgument, "cache_dir " + dir + ": " +
                                                (std::filesystem::is_regular_file(st) ? "a file" : "a device, FIFO or socket") +
                                                ", not a folder; give the folder for OpenVINO's compiled-model cache");
}

// A cache folder that does not exist yet is created (as OpenVINO creates it), just before compiling,
// so that a refused artifact leaves nothing behind; a path that cannot be one says why.
void make_cache_dir(const std::string& dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec || !std::filesystem::is_directory(dir, ec))
        throw Error(ErrorCode::InvalidArgument, "cache_dir " + dir + ": cannot create the folder (" +
                                                    (ec ? ec.message() : std::string("not a folder")) + ")");
}

detail::Layout layout_of(PixelFormat f) {
    switch (f) {
        case PixelFormat::BGR8: return detail::Layout::BGR;
        case PixelFormat::RGB8: return detail::Layout::RGB;
        case PixelFormat::GRAY8: return detail::Layout::GRAY;
        case PixelFormat::BGRA8: return detail::Layout::BGRA;
        case PixelFormat::RGBA8: return detail::Layout::RGBA;
    }
    throw Error(ErrorCode::InvalidArgument, "unknown pixel format " + std::to_string(static_cast<int>(f)));
}

}  // namespace

struct EdgeSegmenter::Impl {
    Options options;
    ArtifactInfo info;
    Contract contract;
    std::map<std::string, std::string> meta;
    Json selftest_json;
    bool has_selftest = false;
    std::vector<detail::ArtifactFile> files;   // kept: the model may reference the weights in place
    ov::Core core;
    ov::CompiledModel compiled;
    ov::InferRequest request;
    std::mutex infer_lock;
    int static_batch = 0;                      // 0: dynamic batch
    size_t in_plane = 0, out_plane = 0;

    void open(const std::string& path);
    void check_frame(const Frame& f) const;
    void check_buffers(const Frame& f, size_t frame_size, const uint8_t* mask, size_t mask_size,
                       const float* probability, size_t probability_size) const;
    std::vector<float> infer(const std::vector<float>& batch, int n);   // n x C x H x W -> n x K x H x W
    void check_finite(const std::vector<float>& logits, size_t n) const;
    SelfTestResult run_selftest();
};

void EdgeSegmenter::Impl::open(const std::string& path) {
    info.path = path;
    std::error_code fs_error;
    if (std::filesystem::is_directory(path, fs_error))   // named before its suffix is judged (as the file reader does)
        throw Error(ErrorCode::Io, path + ": a folder, not a file; give the .xml or .onnx artifact inside it");
    const std::string suffix = detail::suffix_lower(path);
    if (suffix == ".xml") info.kind = "openvino-ir";
    else if (suffix == ".onnx") info.kind = "onnx";
    else if (suffix == ".engine" || suffix == ".plan")
        throw Error(ErrorCode::Unsupported, path + ": TensorRT engines run with TensorRT, not this OpenVINO runtime; "
                                                   "export an .onnx or OpenVINO .xml artifact for it");
    else
        throw Error(ErrorCode::Unsupported, path + ": unknown artifact kind '" + suffix + "'; known: .xml (OpenVINO IR), .onnx");

    // 1. files, read once; with a manifest entry they are checked before anything parses them
    files = detail::read_artifact(path);
    const detail::TrustPolicy policy = detail::trust_policy(options.trusted_keys);   // each key read once
    if (!policy.empty() && !options.cache_dir.empty())   // a cached compiled model is not what was signed
        throw Error(ErrorCode::Integrity, path + ": option cache_dir: compiled models in the OpenVINO cache are "
                                                 "not covered by the signature; drop it under a trust policy");
    try {
        info.signature = policy.empty() ? detail::signature_status(path) : detail::check_signature(path, files, policy);
    } catch (const Error& e) {
        if (e.code() != ErrorCode::Integrity) throw;
        throw Error(ErrorCode::Integrity, path + ": refused by the trust policy: " + e.what());
    }
    std::vector<std::string> problems;
    std::string hash_source;
    if (options.verify) {
        if (detail::check_manifest(path, files, problems, info.manifest_problem)) hash_source = "manifest";
        if (!problems.empty()) {
            std::string msg = path + ": refused: ";
            for (size_t i = 0; i < problems.size(); ++i) msg += (i ? "; " : "") + problems[i];
            throw Error(ErrorCode::Integrity, msg);
        }
    }

    // 2. parse (from the bytes already checked)
    std::shared_ptr<ov::Model> model;
    try {
        const detail::ArtifactFile& main = files[0];
        if (info.kind == "openvino-ir") {
            const detail::ArtifactFile& bin = files[1];
            ov::Tensor weights(ov::element::u8, ov::Shape{bin.bytes.size()},
                               const_cast<char*>(bin.bytes.data()));
            model = core.read_model(main.bytes, weights);
        } else {
            model = core.read_model(main.bytes, ov::Tensor());
        }
    } catch (const std::exception& e) {
        throw Error(ErrorCode::Runtime, path + ": OpenVINO cannot read this model (damaged or not a model: " +
                                            one_line(e.what()) + ")");
    }
    meta = read_metadata(model);

    // 3. the contract and threshold the export embedded (the official preset when none)
    try {
        contract = meta.count("preprocess") ? Contract::from_json(meta["preprocess"]) : Contract();
        if (!meta.count("preprocess")) contract.name = "official";
    } catch (const std::invalid_argument& e) {
        throw Error(ErrorCode::Unsupported, path + ": " + e.what());
    }
    if (const std::string problem = detail::resize_problem(contract); !problem.empty())   // here, not per frame
        throw Error(ErrorCode::Unsupported, path + ": " + problem);
    if (meta.count("format_version") && meta["format_version"] != "1")
        throw Error(ErrorCode::Unsupported, path + ": artifact metadata format_version " + meta["format_version"] +
                                                   "; this runtime reads format 1");
    info.contract_json = meta.count("preprocess") ? meta["preprocess"] : contract.to_json().dump();
    info.threshold = contract.threshold;
    info.net_height = contract.height;
    info.net_width = contract.width;
    info.in_channels = contract.in_channels;
    info.classes = meta.count("num_classes") ? parse_int(path, meta["num_classes"], "num_classes") : 1;
    info.precision = meta.count("precision") ? meta["precision"] : "fp32";
    info.variant = meta.count("variant") ? meta["variant"] : "";
    info.toolkit_version = meta.count("toolkit_version") ? meta["toolkit_version"] : "";
    info.source_sha256 = meta.count("source_sha256") ? meta["source_sha256"] : "";
    if (meta.count("selftest")) {
        try {
            selftest_json = Json::parse(meta["selftest"]);
            has_selftest = true;
        } catch (const detail::JsonError&) {
            // a self-test that cannot be parsed is damaged: kept as a string, reported by the check
            selftest_json = Json::parse("\"unparseable\"");
            has_selftest = true;
        }
    }

    // 4. embedded hash when the manifest did not vouch
    if (options.verify && hash_source.empty()) {
        detail::check_embedded(meta.count("content_sha256") ? meta["content_sha256"] : "", files, problems,
                               info.manifest_problem);
        if (!problems.empty()) throw Error(ErrorCode::Integrity, path + ": refused: " + problems[0]);
        hash_source = "embedded";
    }
    // 5. shapes: N x in_channels x H x W in, N x classes x H x W out
    const ov::PartialShape in_shape = model->input(0).get_partial_shape();
    if (in_shape.rank().is_dynamic() || in_shape.rank().get_length() != 4)
        throw Error(ErrorCode::Unsupported, path + ": the network input is not N x C x H x W");
    auto static_or = [](const ov::Dimension& d, int64_t want) { return d.is_dynamic() || d.get_length() == want; };
    if (!static_or(in_shape[1], contract.in_channels))
        throw Error(ErrorCode::Unsupported, path + ": the network takes " + in_shape[1].to_string() +
                                                   " input channel(s) but its preprocessing contract gives " +
                                                   std::to_string(contract.in_channels));
    if (!static_or(in_shape[2], contract.height) || !static_or(in_shape[3], contract.width))
        throw Error(ErrorCode::Unsupported, path + ": the network input " + in_shape.to_string() +
                                                   " does not match the contract's " + std::to_string(contract.height) +
                                                   "x" + std::to_string(contract.width));

    // 6. device (a missing one falls back to CPU, reported) and compile options
    std::string device = upper(options.device.empty() ? "CPU" : options.device);
    const std::string family = device.substr(0, device.find('.'));
    if (family != "CPU" && family != "GPU" && family != "NPU" && family != "AUTO")
        throw Error(ErrorCode::InvalidArgument, "openvino: unknown device '" + options.device + "'; use one of cpu, gpu, npu, auto");
    std::vector<std::string> present = core.get_available_devices();
    if (device != "AUTO" && std::none_of(present.begin(), present.end(), [&](const std::string& d) {
            return d == device || d.substr(0, d.find('.')) == device;
        })) {
        std::string avail;
        for (const auto& d : present) avail += (avail.empty() ? "" : ", ") + d;
        std::string reason = "OpenVINO sees no " + device + " (available: " + avail + ")";
        if (options.strict_device)
            throw Error(ErrorCode::Runtime, "openvino: device '" + options.device + "' is not available (" + reason +
                                                "); strict_device forbids falling back");
        info.fallback = "requested " + options.device + ", ran on CPU: " + reason;
        device = "CPU";
    }
    const std::string kind = device.substr(0, device.find('.'));   // GPU.1 gets GPU's settings
    if (in_shape[0].is_dynamic() && kind == "NPU") {   // the NPU compiles static shapes only
        model->reshape(ov::PartialShape{1, contract.in_channels, contract.height, contract.width});
    }
    const ov::PartialShape shape_now = model->input(0).get_partial_shape();
    static_batch = shape_now[0].is_static() ? static_cast<int>(shape_now[0].get_length()) : 0;

    Json runtime;
    if (meta.count("runtime")) {
        try {
            runtime = Json::parse(meta["runtime"]);
        } catch (const detail::JsonError&) {
        }
    }
    ov::AnyMap config;
    if (const Json* h = runtime.find("hint"); h && h->is_string()) {
        if (h->as_string() == "latency") config.emplace(ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY));
        if (h->as_string() == "throughput") config.emplace(ov::hint::performance_mode(ov::hint::PerformanceMode::THROUGHPUT));
    }
    int threads = options.threads;
    if (!threads)
        if (const Json* t = runtime.find("threads"); t && t->is_number() && t->as_number() >= 1) threads = static_cast<int>(t->as_number());
    if (threads > 0 && kind == "CPU") config.emplace(ov::inference_num_threads(threads));
    if (const Json* s = runtime.find("num_streams"); s && s->is_number() && s->as_number() >= 1)
        config.emplace(ov::num_streams(static_cast<int>(s->as_number())));
    if (!options.cache_dir.empty()) {
        make_cache_dir(options.cache_dir);
        config.emplace(ov::cache_dir(options.cache_dir));
    }
    // An FP32 (BF16) artifact asks for f32 (bf16) inference, and an INT8 artifact's float parts run
    // at f32 on every CPU, the precision its held-out gate measured (OpenVINO would pick f16 on ARM
    // cores with FP16 arithmetic and bf16 on x86 with native BF16), as the Python backend does.
    // FP16 artifacts run at the device's choice, except on x86 CPUs without native BF16 (f32).
    // AUTO's CPU part gets exactly what the CPU device gets (an FP32 IR under AUTO would otherwise
    // run bf16 on a CPU with native BF16 and fail its own self-test).
    const bool on_cpu = kind == "CPU" || kind == "AUTO";
    std::string wanted;
    if (info.precision == "fp32") wanted = "f32";
    else if (info.precision == "bf16") wanted = "bf16";
    else if (info.precision == "int8" && on_cpu) wanted = "f32";
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
    if (on_cpu && (wanted.empty() || wanted == "bf16")) {
        bool bf16 = false;
        try {
            for (const auto& cap : core.get_property("CPU", ov::device::capabilities)) bf16 = bf16 || cap == "BF16";
        } catch (const std::exception&) {
        }
        if (!bf16 || isa_limit_excludes_bf16()) wanted = "f32";
    }
#endif
    if (!wanted.empty()) {
        const ov::element::Type hint = wanted == "f32" ? ov::element::f32 : ov::element::bf16;
        if (kind == "CPU" || kind == "GPU") config.emplace(ov::hint::inference_precision(hint));
        if (kind == "AUTO") config.emplace(ov::device::properties("CPU", ov::hint::inference_precision(hint)));
    }
    try {
        compiled = core.compile_model(model, device, config);
        request = compiled.create_infer_request();
    } catch (const std::exception& e) {
        throw Error(ErrorCode::Runtime, path + ": OpenVINO cannot compile it for " + device + " (" + one_line(e.what()) + ")");
    }
    info.device = device;
    std::string first_device;
    if (device == "AUTO") {
        try {
            std::string devs;
            for (const auto& d : compiled.get_property(ov::execution_devices)) {
                devs += (devs.empty() ? "" : ",") + d;
                if (first_device.empty()) first_device = d;
            }
            info.device = "AUTO:" + devs;
        } catch (const std::exception&) {
        }
    }
    try {   // AUTO exposes each execution device's properties instead
        ov::element::Type t = device != "AUTO" ? compiled.get_property(ov::hint::inference_precision)
                              : compiled.get_property(ov::device::properties.name()).as<ov::AnyMap>()
                                    .at(first_device).as<ov::AnyMap>()
                                    .at(ov::hint::inference_precision.name()).as<ov::element::Type>();
        info.float_precision = t == ov::element::f32 ? "fp32" : t == ov::element::bf16 ? "bf16"
                             : t == ov::element::f16 ? "fp16" : t.get_type_name();
    } catch (const std::exception&) {
    }
    const std::string run = info.float_precision.empty() ? info.precision : info.float_precision;
    info.run_precision = info.precision == "int8" ? "int8" : run;

    const ov::PartialShape out_shape = compiled.output(0).get_partial_shape();
    if (out_shape.rank().is_dynamic() || out_shape.rank().get_length() != 4 || out_shape[1].is_dynamic() ||
        !static_or(out_shape[2], contract.height) || !static_or(out_shape[3], contract.width))
        throw Error(ErrorCode::Unsupported, path + ": the network output " + out_shape.to_string() +
                                                   " is not N x classes x " + std::to_string(contract.height) + " x " +
                                                   std::to_string(contract.width));
    const int out_classes = static_cast<int>(out_shape[1].get_length());
    if (meta.count("num_classes") && out_classes != info.classes)
        throw Error(ErrorCode::Unsupported, path + ": the network has " + std::to_string(out_classes) +
                                                   " output channel(s) but its metadata says num_classes " +
                                                   std::to_string(info.classes));
    info.classes = out_classes;
    in_plane = static_cast<size_t>(contract.height) * contract.width;
    out_plane = in_plane;

    // 7. the embedded self-test, before the first inference
    if (options.verify) {
        SelfTestResult st = run_selftest();
        info.selftest = st;
        if (!st.passed()) throw Error(ErrorCode::Integrity, path + ": refused: " + st.message);
        // the threshold key must say what the contract says (the self-test covers the contract;
        // Python's verified load refuses the same, in the same order)
        if (meta.count("threshold")) {
            char* end = nullptr;
            double t = std::strtod(meta["threshold"].c_str(), &end);
            if (*end || t != contract.threshold)
                throw Error(ErrorCode::Integrity, path + ": refused: threshold " + meta["threshold"] +
                                                      " in the metadata differs from the contract's " +
                                                      Json::parse(std::to_string(contract.threshold)).dump());
        }
        info.verified = hash_source + " sha256 + self-test";
    }
}

std::vector<float> EdgeSegmenter::Impl::infer(const std::vector<float>& batch, int n) {
    const size_t in_size = static_cast<size_t>(contract.in_channels) * in_plane;
    const size_t out_size = static_cast<size_t>(info.classes) * out_plane;
    std::vector<float> out(static_cast<size_t>(n) * out_size);
    const int chunk = static_batch > 0 ? static_batch : n;
    std::vector<float> padded;
    std::lock_guard<std::mutex> lock(infer_lock);
    for (int start = 0; start < n; start += chunk) {
        const int take = std::min(chunk, n - start);
        const float* src = batch.data() + static_cast<size_t>(start) * in_size;
        if (take < chunk) {   // a static batch: pad with zeros, drop the padding's outputs
            padded.assign(static_cast<size_t>(chunk) * in_size, 0.0f);
            std::memcpy(padded.data(), src, sizeof(float) * take * in_size);
            src = padded.data();
        }
        try {
            ov::Tensor input(ov::element::f32,
                             ov::Shape{static_cast<size_t>(chunk), static_cast<size_t>(contract.in_channels),
                                       static_cast<size_t>(contract.height), static_cast<size_t>(contract.width)},
                             const_cast<float*>(src));
            request.set_input_tensor(input);
            request.infer();
            ov::Tensor output = request.get_output_tensor();
            if (output.get_size() < static_cast<size_t>(take) * out_size)
                throw Error(ErrorCode::Runtime, info.path + ": the network returned " + std::to_string(output.get_size()) +
                                                    " values, expected " + std::to_string(take * out_size));
            float* dst = out.data() + static_cast<size_t>(start) * out_size;
            if (output.get_element_type() == ov::element::f32) {
                std::memcpy(dst, output.data<const float>(), sizeof(float) * take * out_size);
            } else if (output.get_element_type() == ov::element::f16) {
                const ov::float16* p = output.data<const ov::float16>();
                for (size_t i = 0; i < static_cast<size_t>(take) * out_size; ++i) dst[i] = static_cast<float>(p[i]);
            } else {
                throw Error(ErrorCode::Unsupported, info.path + ": output element type " +
                                                        output.get_element_type().get_type_name() + " is not float");
            }
        } catch (const Error&) {
            throw;
        } catch (const std::exception& e) {
            throw Error(ErrorCode::Runtime, info.path + ": inference failed (" + std::string(e.what()).substr(0, 400) + ")");
        }
    }
    return out;
}

// A mask from NaN/inf logits would be silently empty or full: refused, with Python's message
// (NonFiniteOutputError). The self-test checks its own output and does not come here.
void EdgeSegmenter::Impl::check_finite(const std::vector<float>& logits, size_t n) const {
    const size_t per_image = logits.size() / n;
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i)
        bad += !std::all_of(logits.begin() + i * per_image, logits.begin() + (i + 1) * per_image,
                            [](float v) { return std::isfinite(v); });
    if (bad)
        throw Error(ErrorCode::Runtime, info.path + ": the model's output holds NaN or infinite values for " +
                                            std::to_string(bad) + " of " + std::to_string(n) + " image(s): no mask made "
                                            "(its weights overflow or are broken; check the checkpoint it came from)");
}

SelfTestResult EdgeSegmenter::Impl::run_selftest() {
    auto run = [this](const std::vector<float>& x) { return infer(x, 1); };
    return detail::check_selftest(has_selftest ? &selftest_json : nullptr, contract, run, info.run_precision);
}

void EdgeSegmenter::Impl::check_frame(const Frame& f) const {
    if (!f.data) throw Error(ErrorCode::InvalidArgument, "frame has no pixel data (null pointer)");
    if (f.width <= 0 || f.height <= 0 || f.width > kMaxSide || f.height > kMaxSide)
        throw Error(ErrorCode::InvalidArgument, "frame size " + std::to_string(f.width) + "x" + std::to_string(f.height) +
                                                    " is invalid (each side must be 1.." + std::to_string(kMaxSide) + ")");
    const int cn = detail::layout_channels(layout_of(f.format));
    const size_t row = static_cast<size_t>(f.width) * cn;
    if (f.stride != 0 && f.stride < row)
        throw Error(ErrorCode::InvalidArgument, "frame stride " + std::to_string(f.stride) +
                                                    " bytes is smaller than width x channels = " + std::to_string(row));
    const size_t max_stride = (static_cast<size_t>(PTRDIFF_MAX) - row) / static_cast<size_t>(f.height);
    if (f.stride > max_stride)    // (height - 1) x stride + row would wrap: no real buffer has that layout
        throw Error(ErrorCode::InvalidArgument, "frame stride " + std::to_string(f.stride) + " bytes is impossible for " +
                                                    std::to_string(f.height) + " rows (a negative stride passed as size_t?)");
    const int64_t pixels = static_cast<int64_t>(f.width) * f.height;
    if (options.max_pixels > 0 && pixels > options.max_pixels)
        throw Error(ErrorCode::InvalidArgument, "frame of " + std::to_string(f.width) + "x" + std::to_string(f.height) +
                                                    " = " + std::to_string(pixels) + " pixels exceeds max_pixels " +
                                                    std::to_string(options.max_pixels));
}

// After check_frame: each buffer a caller sized must hold what the call reads or writes.
void EdgeSegmenter::Impl::check_buffers(const Frame& f, size_t frame_size, const uint8_t* mask, size_t mask_size,
                                        const float* probability, size_t probability_size) const {
    const size_t row = static_cast<size_t>(f.width) * detail::layout_channels(layout_of(f.format));
    const size_t stride = f.stride ? f.stride : row;
    const size_t frame_needs = static_cast<size_t>(f.height - 1) * stride + row;   // bounded by check_frame
    if (frame_size < frame_needs)
        throw Error(ErrorCode::InvalidArgument, "frame buffer of " + std::to_string(frame_size) + " bytes is too small: " +
                                                    std::to_string(f.height) + " rows of " + std::to_string(row) +
                                                    " bytes, " + std::to_string(stride) + " apart, need " +
                                                    std::to_string(frame_needs));
    const size_t out_needs = static_cast<size_t>(f.width) * f.height * info.classes;
    const std::string shape = std::to_string(f.width) + "x" + std::to_string(f.height) + "x" + std::to_string(info.classes);
    if (mask && mask_size < out_needs)
        throw Error(ErrorCode::InvalidArgument, "mask buffer of " + std::to_string(mask_size) + " bytes is too small: " +
                                                    shape + " needs " + std::to_string(out_needs));
    if (probability && probability_size < out_needs)
        throw Error(ErrorCode::InvalidArgument, "probability buffer of " + std::to_string(probability_size) +
                                                    " floats is too small: " + shape + " needs " + std::to_string(out_needs));
}

// ---------------------------------------------------------------------------------------------
namespace {
// Whatever a runtime library throws (OpenVINO's ov::Exception, std::invalid_argument, std::bad_alloc)
// leaves the C++ API as a cmunext::Error, so `catch (const cmunext::Error&)` is enough for callers.
template <class F>
auto as_error(const std::string& where, F&& f) -> decltype(f()) {
    try {
        return f();
    } catch (const Error&) {
        throw;
    } catch (const std::invalid_argument& e) {
        throw Error(ErrorCode::Unsupported, where + ": " + e.what());
    } catch (const std::exception& e) {
        throw Error(ErrorCode::Runtime, where + ": " + one_line(e.what()));
    }
}
}  // namespace

EdgeSegmenter::Impl& EdgeSegmenter::impl() const {
    if (!impl_) throw Error(ErrorCode::InvalidArgument, "this EdgeSegmenter was moved from: use the one it was moved to");
    return *impl_;
}

EdgeSegmenter::EdgeSegmenter(const std::string& artifact, const Options& options) : impl_(new Impl) {
    if (options.threads < 0) throw Error(ErrorCode::InvalidArgument, "threads must be >= 0 (0: the artifact's setting)");
    if (options.max_pixels < 0) throw Error(ErrorCode::InvalidArgument, "max_pixels must be >= 0 (0: no limit)");
    check_cache_dir(options.cache_dir);
    impl_->options = options;
    if (artifact.empty()) throw Error(ErrorCode::InvalidArgument, "no artifact path given");
    as_error(artifact, [&] { impl_->open(artifact); });
}

EdgeSegmenter::~EdgeSegmenter() = default;
EdgeSegmenter::EdgeSegmenter(EdgeSegmenter&&) noexcept = default;
EdgeSegmenter& EdgeSegmenter::operator=(EdgeSegmenter&&) noexcept = default;

const ArtifactInfo& EdgeSegmenter::info() const { return impl().info; }

std::string EdgeSegmenter::describe() const {
    const ArtifactInfo& i = impl().info;
    std::string s = i.path + ": " + i.kind + " " + i.precision + " on " + i.device + " (runs " + i.run_precision +
                    (i.precision == "int8" && !i.float_precision.empty() ? ", float layers " + i.float_precision : "") + "), " +
                    std::to_string(i.net_height) + "x" + std::to_string(i.net_width) + ", " + std::to_string(i.classes) +
                    " class(es), threshold " + Json::parse(std::to_string(i.threshold)).dump();
    if (i.verified.empty()) {
        s += ", NOT verified";
    } else {
        char dice[32];
        std::snprintf(dice, sizeof dice, "%.4f", i.selftest.mask_dice);
        s += ", verified (" + i.verified + " passed: mask Dice agreement " + dice + " with the export" +
             (i.selftest.exact_mask_match ? ", masks identical)" : ")");
    }
    s += "; " + i.signature;
    if (!i.manifest_problem.empty()) s += "; " + i.manifest_problem;
    if (!i.fallback.empty()) s += "; fallback: " + i.fallback;
    return s;
}

SelfTestResult EdgeSegmenter::self_test() {
    return as_error(impl().info.path, [&] { return impl().run_selftest(); });
}

std::vector<float> EdgeSegmenter::preprocess(const Frame& frame) const {
    impl().check_frame(frame);
    const Contract& c = impl_->contract;
    const int cn = detail::layout_channels(layout_of(frame.format));
    std::vector<float> out(static_cast<size_t>(c.in_channels) * impl_->in_plane);
    detail::preprocess(c, frame.data, frame.width, frame.height,
                       frame.stride ? frame.stride : static_cast<size_t>(frame.width) * cn, layout_of(frame.format),
                       out.data());
    return out;
}

void EdgeSegmenter::segment_into(const Frame& frame, uint8_t* mask, float* probability, double timings_ms[4]) {
    segment_into(frame, SIZE_MAX, mask, SIZE_MAX, probability, SIZE_MAX, timings_ms);
}

void EdgeSegmenter::segment_into(const Frame& frame, size_t frame_size, uint8_t* mask, size_t mask_size,
                                 float* probability, size_t probability_size, double timings_ms[4]) {
    as_error(impl().info.path, [&] {
        segment_into_unguarded(frame, frame_size, mask, mask_size, probability, probability_size, timings_ms);
    });
}

void EdgeSegmenter::segment_into_unguarded(const Frame& frame, size_t frame_size, uint8_t* mask, size_t mask_size,
                                           float* probability, size_t probability_size, double timings_ms[4]) {
    auto t0 = std::chrono::steady_clock::now();
    impl_->check_frame(frame);
    impl_->check_buffers(frame, frame_size, mask, mask_size, probability, probability_size);
    const Contract& c = impl_->contract;
    const int cn = detail::layout_channels(layout_of(frame.format));
    const size_t stride = frame.stride ? frame.stride : static_cast<size_t>(frame.width) * cn;
    std::vector<float> input(static_cast<size_t>(c.in_channels) * impl_->in_plane);
    detail::preprocess(c, frame.data, frame.width, frame.height, stride, layout_of(frame.format), input.data());
    double pre = ms_since(t0);
    auto t1 = std::chrono::steady_clock::now();
    std::vector<float> logits = impl_->infer(input, 1);
    impl_->check_finite(logits, 1);
    double inf = ms_since(t1);
    auto t2 = std::chrono::steady_clock::now();
    if (mask || probability)
        detail::postprocess(c, logits.data(), impl_->info.classes, frame.width, frame.height, probability, mask);
    double post = ms_since(t2);
    if (timings_ms) {
        timings_ms[0] = pre;
        timings_ms[1] = inf;
        timings_ms[2] = post;
        timings_ms[3] = ms_since(t0);
    }
}

Segmentation EdgeSegmenter::segment(const Frame& frame) { return segment_batch({frame}, 1)[0]; }

std::vector<Segmentation> EdgeSegmenter::segment_batch(const std::vector<Frame>& frames, int batch_size) {
    return as_error(impl().info.path, [&] { return segment_batch_unguarded(frames, batch_size); });
}

std::vector<Segmentation> EdgeSegmenter::segment_batch_unguarded(const std::vector<Frame>& frames, int batch_size) {
    if (batch_size < 1) throw Error(ErrorCode::InvalidArgument, "batch_size must be >= 1");
    std::vector<Segmentation> results;
    results.reserve(frames.size());
    const Contract& c = impl_->contract;
    const size_t in_size = static_cast<size_t>(c.in_channels) * impl_->in_plane;
    const size_t out_size = static_cast<size_t>(impl_->info.classes) * impl_->out_plane;
    for (size_t start = 0; start < frames.size(); start += batch_size) {
        const size_t n = std::min(frames.size() - start, static_cast<size_t>(batch_size));
        auto t0 = std::chrono::steady_clock::now();
        for (size_t i = 0; i < n; ++i) impl_->check_frame(frames[start + i]);
        std::vector<float> batch(n * in_size);
        for (size_t i = 0; i < n; ++i) {
            const Frame& f = frames[start + i];
            const int cn = detail::layout_channels(layout_of(f.format));
            const size_t stride = f.stride ? f.stride : static_cast<size_t>(f.width) * cn;
            detail::preprocess(c, f.data, f.width, f.height, stride, layout_of(f.format), batch.data() + i * in_size);
        }
        double pre = ms_since(t0);
        auto t1 = std::chrono::steady_clock::now();
        std::vector<float> logits = impl_->infer(batch, static_cast<int>(n));
        impl_->check_finite(logits, n);
        double inf = ms_since(t1);
        auto t2 = std::chrono::steady_clock::now();
        const size_t first = results.size();
        for (size_t i = 0; i < n; ++i) {
            const Frame& f = frames[start + i];
            Segmentation r;
            r.width = f.width;
            r.height = f.height;
            r.classes = impl_->info.classes;
            r.logits.assign(logits.begin() + i * out_size, logits.begin() + (i + 1) * out_size);
            const size_t px = static_cast<size_t>(f.width) * f.height * r.classes;
            r.mask.resize(px);
            r.probability.resize(px);
            detail::postprocess(c, r.logits.data(), r.classes, f.width, f.height, r.probability.data(), r.mask.data());
            results.push_back(std::move(r));
        }
        double post = ms_since(t2);
        for (size_t i = first; i < results.size(); ++i) {   // per-image share of the chunk's time
            results[i].preprocess_ms = pre / n;
            results[i].infer_ms = inf / n;
            results[i].postprocess_ms = post / n;
            results[i].total_ms = (pre + inf + post) / n;
        }
    }
    return results;
}

}  // namespace cmunext
