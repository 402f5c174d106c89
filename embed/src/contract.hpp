// The preprocessing contract (cmunext_edge PreprocessSpec) in C++: parsed from the JSON an export
// embeds, validated with the same rules, and applied with the same arithmetic:
//   frame -> 8-bit BGR (gray replicated, alpha dropped) -> channel order -> [gray] ->
//   OpenCV INTER_LINEAR resize of the 8-bit image -> (x - mean*255) * 1/(std*255) [/ (1/extra_scale)]
// in float32, CHW; and logits -> sigmoid -> INTER_LINEAR float resize to the frame -> > threshold.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "json.hpp"

namespace cmunext::detail {

struct Contract {
    int height = 256;
    int width = 256;
    std::string channel_order = "bgr";
    std::string interpolation = "linear";
    std::vector<double> mean = {0.485, 0.456, 0.406};
    std::vector<double> std = {0.229, 0.224, 0.225};
    double max_pixel_value = 255.0;
    double extra_scale = 1.0 / 255.0;
    double threshold = 0.5;
    int in_channels = 3;
    std::string name = "custom";

    // PreprocessSpec.from_json: unknown keys and invalid values are errors (std::invalid_argument)
    static Contract from_json(const std::string& text);
    // PreprocessSpec.to_json() as a JSON object (every field, defaults included)
    Json to_json() const;
    // contract_differences(recorded, self): "field now (exported with was)" for every field but name
    std::vector<std::string> differences(const Json& recorded) const;
};

// Pixel layouts the library accepts (8 bit per channel, rows `stride` bytes apart)
enum class Layout { BGR, RGB, GRAY, BGRA, RGBA };
int layout_channels(Layout l);

// One frame -> CHW float32 network input (contract.in_channels x height x width) into `out`.
void preprocess(const Contract& c, const uint8_t* pixels, int width, int height, size_t stride, Layout layout,
                float* out);
// The normalisation alone: HxWxC uint8 at network size (C = in_channels) -> CHW float32
void normalize(const Contract& c, const uint8_t* hwc, float* chw);

// OpenCV cv::resize(src, dst, Size(dw, dh), 0, 0, INTER_LINEAR) for 8-bit data with `cn` interleaved
// channels (the fixed-point path with its SIMD rounding); same size is a copy, as in OpenCV.
void resize_linear_u8(const uint8_t* src, int sw, int sh, size_t sstride, int cn, uint8_t* dst, int dw, int dh);
// cv::resize INTER_NEAREST for 8-bit data
void resize_nearest_u8(const uint8_t* src, int sw, int sh, size_t sstride, int cn, uint8_t* dst, int dw, int dh);
// Whether `preprocess` implements the contract's resize ("linear", "nearest"); "" when it does, else
// the reason (EdgeSegmenter refuses such an artifact at open)
std::string resize_problem(const Contract& c);
// cv::resize INTER_LINEAR for float32 data with `cn` interleaved channels
void resize_linear_f32(const float* src, int sw, int sh, int cn, float* dst, int dw, int dh);

// logits C x h x w -> probability H x W x C (sigmoid, resized to the frame) and mask (0/1) H x W x C
void postprocess(const Contract& c, const float* logits, int classes, int out_w, int out_h, float* probability,
                 uint8_t* mask);

}  // namespace cmunext::detail
