// Image files for the example program, decoded the way cmunext-predict (OpenCV imread with
// IMREAD_COLOR | IMREAD_ANYDEPTH, then the high byte of 16-bit data) sees them, with no
// third-party decoder: PNG (every bit depth, colour type and interlacing, EXIF orientation),
// binary PGM/PPM, uncompressed BMP; JPEG too when the build found libjpeg (CMUNEXT_HAVE_JPEG).
// The size is read from the header first and an image above `max_pixels` is refused before
// anything is decoded. Every failure is an ImageError with one line saying why.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace cmunext::example {

struct ImageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Image {
    int width = 0, height = 0;
    int channels = 0;              // 1 (gray) or 3 (RGB order)
    std::vector<uint8_t> pixels;   // height x width x channels, packed
    int frames = 1;                // images the file holds (an animated PNG's acTL); the first is read
};

Image read_image(const std::string& path, int64_t max_pixels);
// 8-bit gray PNG (what cmunext-predict writes for masks)
void write_png_gray(const std::string& path, const uint8_t* pixels, int width, int height);
// the formats this build decodes, e.g. "png, pgm/ppm, bmp, jpeg"
std::string supported_formats();

}  // namespace cmunext::example
