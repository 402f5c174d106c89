#include "image_io.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "codec.hpp"

#ifdef CMUNEXT_HAVE_JPEG
#include <csetjmp>
#include <jpeglib.h>
#include <jerror.h>
#endif

namespace cmunext::example {

using detail::CodecError;

namespace {

uint32_t be32(const uint8_t* p) { return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3]; }
uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
uint32_t le32(const uint8_t* p) { return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24); }
uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

// bytes from a file, for a message: printable ASCII as is, anything else as \xNN (no control bytes reach a terminal)
std::string printable(const uint8_t* p, size_t n) {
    std::string out;
    for (size_t i = 0; i < n; ++i) {
        if (p[i] >= 0x20 && p[i] < 0x7f) {
            out += static_cast<char>(p[i]);
        } else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", p[i]);
            out += buf;
        }
    }
    return out;
}

// w and h come from header fields of at most 32 bits: their product fits in 64 unsigned bits
void check_size(const std::string& path, int64_t w, int64_t h, int64_t max_pixels) {
    const std::string size = std::to_string(w) + "x" + std::to_string(h);
    if (w < 1 || h < 1) throw ImageError(path + ": image header says " + size + " (empty)");
    const uint64_t pixels = static_cast<uint64_t>(w) * static_cast<uint64_t>(h);
    if (max_pixels > 0 && pixels > static_cast<uint64_t>(max_pixels))
        throw ImageError(path + ": " + size + " = " + std::to_string(pixels) + " pixels exceeds the limit of " +
                         std::to_string(max_pixels) + " (--max-pixels); refused before decoding");
    if (w > 65536 || h > 65536)
        throw ImageError(path + ": " + size + ": a side above 65536 pixels is more than the library takes "
                                              "(docs/firmware.md, Frames); refused before decoding");
}

// ---- EXIF orientation (OpenCV applies it on imread) --------------------------------------
int exif_orientation(const uint8_t* t, size_t n) {
    if (n < 8) return 1;
    bool le;
    if (t[0] == 'I' && t[1] == 'I') le = true;
    else if (t[0] == 'M' && t[1] == 'M') le = false;
    else return 1;
    auto u16 = [&](size_t o) -> uint32_t { return o + 2 <= n ? (le ? le16(t + o) : be16(t + o)) : 0; };
    auto u32 = [&](size_t o) -> uint32_t { return o + 4 <= n ? (le ? le32(t + o) : be32(t + o)) : 0; };
    if (u16(2) != 42) return 1;
    size_t ifd = u32(4);
    if (ifd + 2 > n) return 1;
    uint32_t count = u16(ifd);
    for (uint32_t i = 0; i < count; ++i) {
        size_t e = ifd + 2 + 12 * static_cast<size_t>(i);
        if (e + 12 > n) break;
        if (u16(e) == 0x0112 && u16(e + 2) == 3) {
            uint32_t v = u16(e + 8);
            return v >= 1 && v <= 8 ? static_cast<int>(v) : 1;
        }
    }
    return 1;
}

Image orient(Image img, int orientation) {
    if (orientation <= 1) return img;
    const bool transpose = orientation >= 5;
    Image out;
    out.channels = img.channels;
    out.width = transpose ? img.height : img.width;
    out.height = transpose ? img.width : img.height;
    out.pixels.resize(img.pixels.size());
    // OpenCV: 2 flip x, 3 flip both, 4 flip y, 5 transpose, 6 transpose+flip x,
    // 7 transpose+flip both, 8 transpose+flip y
    const bool flip_x = orientation == 2 || orientation == 3 || orientation == 6 || orientation == 7;
    const bool flip_y = orientation == 3 || orientation == 4 || orientation == 7 || orientation == 8;
    const int c = img.channels;
    for (int y = 0; y < out.height; ++y)
        for (int x = 0; x < out.width; ++x) {
            int tx = flip_x ? out.width - 1 - x : x;    // coordinates in the (transposed) image
            int ty = flip_y ? out.height - 1 - y : y;
            int sx = transpose ? ty : tx, sy = transpose ? tx : ty;
            std::memcpy(&out.pixels[(static_cast<size_t>(y) * out.width + x) * c],
                        &img.pixels[(static_cast<size_t>(sy) * img.width + sx) * c], c);
        }
    return out;
}

// ---- PNG ----------------------------------------------------------------------------------
Image decode_png(const std::string& path, const std::vector<uint8_t>& f, int64_t max_pixels) {
    size_t pos = 8;
    uint32_t w = 0, h = 0;
    int depth = 0, ctype = -1, interlace = 0;
    std::vector<uint8_t> palette, idat;
    int orientation = 1, frames = 1;
    bool seen_ihdr = false, seen_iend = false;
    while (pos + 12 <= f.size()) {
        uint32_t len = be32(&f[pos]);
        if (len > 0x7FFFFFFFu || pos + 12 + len > f.size()) throw ImageError(path + ": PNG chunk runs past the end of the file (truncated)");
        const uint8_t* type = &f[pos + 4];
        const uint8_t* data = &f[pos + 8];
        const bool critical = !(type[0] & 0x20);
        if (critical && detail::crc32(type, len + 4) != be32(&f[pos + 8 + len]))
            throw ImageError(path + ": PNG chunk " + printable(type, 4) + " has a bad CRC (damaged file)");
        std::string t(reinterpret_cast<const char*>(type), 4);
        if (!seen_ihdr && t != "IHDR") throw ImageError(path + ": PNG does not start with IHDR");
        if (t == "IHDR") {
            if (len != 13) throw ImageError(path + ": PNG IHDR has the wrong length");
            w = be32(data);
            h = be32(data + 4);
            depth = data[8];
            ctype = data[9];
            interlace = data[12];
            check_size(path, w, h, max_pixels);
            bool ok = (ctype == 0 && (depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16)) ||
                      (ctype == 3 && (depth == 1 || depth == 2 || depth == 4 || depth == 8)) ||
                      ((ctype == 2 || ctype == 4 || ctype == 6) && (depth == 8 || depth == 16));
            if (!ok || data[10] != 0 || data[11] != 0 || interlace > 1)
                throw ImageError(path + ": PNG header is invalid (colour type " + std::to_string(ctype) + ", bit depth " +
                                 std::to_string(depth) + ")");
            seen_ihdr = true;
        } else if (t == "PLTE") {
            if (len % 3 || len > 768) throw ImageError(path + ": PNG palette is invalid");
            palette.assign(data, data + len);
        } else if (t == "IDAT") {
            idat.insert(idat.end(), data, data + len);
        } else if (t == "eXIf") {
            orientation = exif_orientation(data, len);
        } else if (t == "acTL" && len >= 8) {           // animated PNG: its default image is read
            frames = static_cast<int>(std::min<uint32_t>(be32(data), 0x7FFFFFFFu));
        } else if (t == "IEND") {
            seen_iend = true;
            break;
        }
        pos += 12 + len;
    }
    if (!seen_ihdr) throw ImageError(path + ": not a readable image (PNG without a header)");
    if (!seen_iend && idat.empty()) throw ImageError(path + ": PNG is truncated (no image data)");
    if (!seen_iend)     // as cmunext-predict (libpng): a PNG cut short is refused, even with all its pixels
        throw ImageError(path + ": PNG is truncated (the file ends before its IEND chunk)");
    if (ctype == 3 && palette.empty()) throw ImageError(path + ": palette PNG without a palette");
    const int samples = ctype == 2 ? 3 : ctype == 4 ? 2 : ctype == 6 ? 4 : 1;
    const int bits_pp = samples * depth;
    const int bpp = std::max(1, bits_pp / 8);
    struct Pass { int x0, y0, dx, dy; };
    const Pass adam7[7] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4}, {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};
    const Pass whole[1] = {{0, 0, 1, 1}};
    const Pass* passes = interlace ? adam7 : whole;
    const int npass = interlace ? 7 : 1;
    size_t expected = 0;
    for (int p = 0; p < npass; ++p) {
        size_t pw = (w - passes[p].x0 + passes[p].dx - 1) / passes[p].dx;
        size_t ph = (h - passes[p].y0 + passes[p].dy - 1) / passes[p].dy;
        if (pw && ph) expected += ph * (1 + (pw * bits_pp + 7) / 8);
    }
    std::vector<uint8_t> raw;
    try {
        raw = detail::zlib_decompress(idat.data(), idat.size(), expected + 65536);
    } catch (const CodecError& e) {
        throw ImageError(path + ": PNG image data is damaged or truncated (" + e.what() + ")");
    }
    if (raw.size() < expected) throw ImageError(path + ": PNG image data is truncated (not enough image data)");

    Image img;
    img.width = static_cast<int>(w);
    img.height = static_cast<int>(h);
    img.channels = (ctype == 0 || ctype == 4) ? 1 : 3;
    img.pixels.assign(static_cast<size_t>(w) * h * img.channels, 0);
    const int maxv = (1 << depth) - 1;
    size_t at = 0;
    for (int p = 0; p < npass; ++p) {
        const Pass& ps = passes[p];
        const size_t pw = (w - ps.x0 + ps.dx - 1) / ps.dx, ph = (h - ps.y0 + ps.dy - 1) / ps.dy;
        if (!pw || !ph) continue;
        const size_t rowbytes = (pw * bits_pp + 7) / 8;
        std::vector<uint8_t> prev(rowbytes, 0), cur(rowbytes);
        for (size_t r = 0; r < ph; ++r) {
            const uint8_t filter = raw[at++];
            const uint8_t* src = &raw[at];
            at += rowbytes;
            const size_t b = static_cast<size_t>(bpp);
            switch (filter) {
                case 0: std::memcpy(cur.data(), src, rowbytes); break;
                case 1:
                    for (size_t i = 0; i < rowbytes; ++i) cur[i] = static_cast<uint8_t>(src[i] + (i >= b ? cur[i - b] : 0));
                    break;
                case 2:
                    for (size_t i = 0; i < rowbytes; ++i) cur[i] = static_cast<uint8_t>(src[i] + prev[i]);
                    break;
                case 3:
                    for (size_t i = 0; i < rowbytes; ++i)
                        cur[i] = static_cast<uint8_t>(src[i] + (((i >= b ? cur[i - b] : 0) + prev[i]) >> 1));
                    break;
                case 4:
                    for (size_t i = 0; i < rowbytes; ++i) {
                        int a = i >= b ? cur[i - b] : 0, up = prev[i], c = i >= b ? prev[i - b] : 0;
                        int pp = a + up - c, pa = std::abs(pp - a), pb = std::abs(pp - up), pc = std::abs(pp - c);
                        cur[i] = static_cast<uint8_t>(src[i] + ((pa <= pb && pa <= pc) ? a : (pb <= pc ? up : c)));
                    }
                    break;
                default: throw ImageError(path + ": PNG row filter " + std::to_string(filter) + " is invalid (damaged file)");
            }
            const size_t y = ps.y0 + r * ps.dy;
            if (depth == 8 && ctype != 3 && samples == img.channels && !interlace) {   // the common case: copy the row
                std::memcpy(&img.pixels[y * w * img.channels], cur.data(), pw * img.channels);
                std::swap(prev, cur);
                continue;
            }
            for (size_t k = 0; k < pw; ++k) {
                const size_t x = ps.x0 + k * ps.dx;
                uint8_t* out = &img.pixels[(y * w + x) * img.channels];
                auto sample = [&](int s) -> int {   // s-th sample of pixel k, scaled to 8 bits
                    if (depth == 8) return cur[k * samples + s];
                    if (depth == 16) return cur[(k * samples + s) * 2];   // high byte, as cmunext-predict
                    size_t bit = k * depth;
                    int v = (cur[bit / 8] >> (8 - depth - bit % 8)) & maxv;
                    return ctype == 3 ? v : v * 255 / maxv;
                };
                if (ctype == 3) {
                    int idx = sample(0);
                    if (static_cast<size_t>(idx) * 3 + 2 < palette.size()) {
                        out[0] = palette[idx * 3];
                        out[1] = palette[idx * 3 + 1];
                        out[2] = palette[idx * 3 + 2];
                    }
                } else if (img.channels == 1) {
                    out[0] = static_cast<uint8_t>(sample(0));
                } else {
                    out[0] = static_cast<uint8_t>(sample(0));
                    out[1] = static_cast<uint8_t>(sample(1));
                    out[2] = static_cast<uint8_t>(sample(2));
                }
            }
            std::swap(prev, cur);
        }
    }
    Image oriented = orient(std::move(img), orientation);
    oriented.frames = std::max(1, frames);
    return oriented;
}

// ---- PGM / PPM (binary) ------------------------------------------------------------------------
Image decode_pnm(const std::string& path, const std::vector<uint8_t>& f, int64_t max_pixels) {
    size_t pos = 2;
    auto next_int = [&](const char* what) -> int64_t {
        for (;;) {
            while (pos < f.size() && std::isspace(f[pos])) ++pos;
            if (pos < f.size() && f[pos] == '#') {
                while (pos < f.size() && f[pos] != '\n') ++pos;
                continue;
            }
            break;
        }
        int64_t v = 0;
        size_t start = pos;
        for (; pos < f.size() && std::isdigit(f[pos]); ++pos)     // every digit read, the value capped at 2^32 - 1
            v = std::min<int64_t>(v * 10 + (f[pos] - '0'), 4294967295);
        if (pos == start) throw ImageError(path + ": PNM header has no " + what);
        return v;
    };
    const bool color = f[1] == '6';
    const int64_t w = next_int("width"), h = next_int("height");
    check_size(path, w, h, max_pixels);
    const int64_t maxval = next_int("maximum value");
    if (maxval != 255 && maxval != 65535)
        throw ImageError(path + ": PNM maximum value " + std::to_string(maxval) + " is not supported (255 or 65535)");
    ++pos;   // one whitespace byte before the raster
    const int c = color ? 3 : 1, bytes = maxval > 255 ? 2 : 1;
    const size_t need = static_cast<size_t>(w) * h * c * bytes;
    if (pos > f.size() || f.size() - pos < need) throw ImageError(path + ": PNM raster is truncated");
    Image img;
    img.width = static_cast<int>(w);
    img.height = static_cast<int>(h);
    img.channels = c;
    img.pixels.resize(static_cast<size_t>(w) * h * c);
    for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = f[pos + i * bytes];   // high byte of 16-bit
    return img;
}

// ---- BMP (uncompressed 8/24/32 bit) ------------------------------------------------------------
Image decode_bmp(const std::string& path, const std::vector<uint8_t>& f, int64_t max_pixels) {
    if (f.size() < 54) throw ImageError(path + ": BMP header is truncated");
    const uint32_t offset = le32(&f[10]), hsize = le32(&f[14]);
    if (hsize < 40) throw ImageError(path + ": BMP header version (" + std::to_string(hsize) + " bytes) is not supported");
    const int32_t w = static_cast<int32_t>(le32(&f[18])), hs = static_cast<int32_t>(le32(&f[22]));
    const int bits = le16(&f[28]);
    const uint32_t comp = le32(&f[30]);
    const bool top_down = hs < 0;
    const int64_t h = top_down ? -static_cast<int64_t>(hs) : hs;
    check_size(path, w, h, max_pixels);
    if (!(comp == 0 || (comp == 3 && bits == 32)) || (bits != 8 && bits != 24 && bits != 32))
        throw ImageError(path + ": BMP with " + std::to_string(bits) + " bits and compression " + std::to_string(comp) +
                         " is not supported by this example's decoder (8, 24 or 32 bit uncompressed are)");
    const size_t row = ((static_cast<size_t>(w) * bits + 31) / 32) * 4;
    if (offset > f.size() || (f.size() - offset) / row < static_cast<size_t>(h)) throw ImageError(path + ": BMP pixel data is truncated");
    std::vector<uint8_t> pal;
    if (bits == 8) {
        uint32_t colors = le32(&f[46]);
        if (colors == 0 || colors > 256) colors = 256;
        size_t at = 14 + hsize;
        for (uint32_t i = 0; i < colors && at + 4 <= offset && at + 4 <= f.size(); ++i, at += 4) {
            pal.push_back(f[at + 2]);   // stored B G R x -> keep RGB
            pal.push_back(f[at + 1]);
            pal.push_back(f[at]);
        }
    }
    Image img;
    img.width = w;
    img.height = static_cast<int>(h);
    img.channels = 3;
    img.pixels.resize(static_cast<size_t>(w) * h * 3);
    for (int64_t y = 0; y < h; ++y) {
        const uint8_t* src = &f[offset + row * static_cast<size_t>(top_down ? y : h - 1 - y)];
        uint8_t* out = &img.pixels[static_cast<size_t>(y) * w * 3];
        for (int32_t x = 0; x < w; ++x, out += 3) {
            if (bits == 8) {
                size_t i = static_cast<size_t>(src[x]) * 3;
                if (i + 2 < pal.size()) { out[0] = pal[i]; out[1] = pal[i + 1]; out[2] = pal[i + 2]; }
                else out[0] = out[1] = out[2] = 0;
            } else {
                const uint8_t* p = src + static_cast<size_t>(x) * (bits / 8);
                out[0] = p[2]; out[1] = p[1]; out[2] = p[0];
            }
        }
    }
    return img;
}

// ---- JPEG (libjpeg, when the build found it) ---------------------------------------------------
bool jpeg_size(const std::vector<uint8_t>& f, int64_t& w, int64_t& h) {
    size_t i = 2;
    while (i + 4 <= f.size()) {
        if (f[i] != 0xFF) return false;
        uint8_t m = f[i + 1];
        if (m == 0xFF) { ++i; continue; }
        if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) { i += 2; continue; }
        uint16_t len = be16(&f[i + 2]);
        const bool sof = (m >= 0xC0 && m <= 0xCF) && m != 0xC4 && m != 0xC8 && m != 0xCC;
        if (sof && i + 9 <= f.size()) {
            h = be16(&f[i + 5]);
            w = be16(&f[i + 7]);
            return true;
        }
        if (len < 2) return false;
        i += 2 + len;
    }
    return false;
}

#ifdef CMUNEXT_HAVE_JPEG
struct JpegErr {
    jpeg_error_mgr pub;
    std::jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    uint8_t* buf;   // here, not in a local: its value must survive the longjmp
    bool truncated; // libjpeg warned of a premature end: it fills the rest in (cmunext-predict refuses it)
};

extern "C" void jpeg_error_to_longjmp(j_common_ptr cinfo) {
    JpegErr* err = reinterpret_cast<JpegErr*>(cinfo->err);
    (*cinfo->err->format_message)(cinfo, err->message);
    std::longjmp(err->jump, 1);
}

extern "C" void jpeg_quiet(j_common_ptr cinfo, int msg_level) {
    if (msg_level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF)
        reinterpret_cast<JpegErr*>(cinfo->err)->truncated = true;
}

// C-style on purpose: no object with a destructor lives across setjmp
bool jpeg_decode_raw(const uint8_t* data, size_t size, uint8_t** out, int* w, int* h, int* c, int* orientation, char* message) {
    jpeg_decompress_struct cinfo;
    JpegErr err;
    err.buf = nullptr;
    err.truncated = false;
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = jpeg_error_to_longjmp;
    err.pub.emit_message = jpeg_quiet;
    if (setjmp(err.jump)) {
        std::strncpy(message, err.message, JMSG_LENGTH_MAX - 1);
        message[JMSG_LENGTH_MAX - 1] = 0;
        jpeg_destroy_decompress(&cinfo);
        std::free(err.buf);
        return false;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, const_cast<unsigned char*>(data), static_cast<unsigned long>(size));
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&cinfo, TRUE);
    *orientation = 1;
    for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1 && m->data_length > 6 && std::memcmp(m->data, "Exif\0\0", 6) == 0)
            *orientation = exif_orientation(m->data + 6, m->data_length - 6);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        std::strcpy(message, "CMYK JPEG is not supported by this example's decoder");
        jpeg_destroy_decompress(&cinfo);
        return false;
    }
    cinfo.out_color_space = cinfo.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&cinfo);
    *w = static_cast<int>(cinfo.output_width);
    *h = static_cast<int>(cinfo.output_height);
    *c = cinfo.output_components;
    const size_t row = static_cast<size_t>(*w) * *c;
    err.buf = static_cast<uint8_t*>(std::malloc(row * *h));
    if (!err.buf) {
        std::strcpy(message, "out of memory");
        jpeg_destroy_decompress(&cinfo);
        return false;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW r = err.buf + row * cinfo.output_scanline;
        jpeg_read_scanlines(&cinfo, &r, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    if (err.truncated) {
        std::strcpy(message, "truncated: the data ends before the image does");
        std::free(err.buf);
        return false;
    }
    *out = err.buf;
    return true;
}
#endif

Image decode_jpeg(const std::string& path, const std::vector<uint8_t>& f, int64_t max_pixels) {
    int64_t w = 0, h = 0;
    if (!jpeg_size(f, w, h)) throw ImageError(path + ": JPEG header has no frame size (damaged file)");
    check_size(path, w, h, max_pixels);
#ifdef CMUNEXT_HAVE_JPEG
    uint8_t* buf = nullptr;
    int iw = 0, ih = 0, c = 0, orientation = 1;
    char message[JMSG_LENGTH_MAX] = {0};
    if (!jpeg_decode_raw(f.data(), f.size(), &buf, &iw, &ih, &c, &orientation, message))
        throw ImageError(path + ": not a readable JPEG (" + message + ")");
    Image img;
    img.width = iw;
    img.height = ih;
    img.channels = c;
    img.pixels.assign(buf, buf + static_cast<size_t>(iw) * ih * c);
    std::free(buf);
    return orient(std::move(img), orientation);
#else
    throw ImageError(path + ": JPEG support was not built in (no libjpeg found when building); convert it to PNG or "
                            "install libjpeg-dev and rebuild");
#endif
}

}  // namespace

std::string supported_formats() {
#ifdef CMUNEXT_HAVE_JPEG
    return "png, jpeg, bmp, pgm/ppm";
#else
    return "png, bmp, pgm/ppm";
#endif
}

Image read_image(const std::string& path, int64_t max_pixels) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw ImageError(path + ": " + (errno ? std::strerror(errno) : "cannot open"));
    std::vector<uint8_t> f((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) throw ImageError(path + ": read error");
    if (f.empty()) throw ImageError(path + ": not a readable image (empty file)");
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (f.size() >= 8 && std::memcmp(f.data(), png_sig, 8) == 0) return decode_png(path, f, max_pixels);
    if (f.size() >= 3 && f[0] == 0xFF && f[1] == 0xD8 && f[2] == 0xFF) return decode_jpeg(path, f, max_pixels);
    if (f.size() >= 2 && f[0] == 'B' && f[1] == 'M') return decode_bmp(path, f, max_pixels);
    if (f.size() >= 2 && f[0] == 'P' && (f[1] == '5' || f[1] == '6')) return decode_pnm(path, f, max_pixels);
    throw ImageError(path + ": not a readable image (unknown format; this program decodes " + supported_formats() +
                     ": decode others in your application and pass the frame to the library)");
}

void write_png_gray(const std::string& path, const uint8_t* pixels, int width, int height) {
    std::vector<uint8_t> raw;
    raw.reserve(static_cast<size_t>(width + 1) * height);
    for (int y = 0; y < height; ++y) {
        raw.push_back(0);   // filter: none
        raw.insert(raw.end(), pixels + static_cast<size_t>(y) * width, pixels + static_cast<size_t>(y + 1) * width);
    }
    std::vector<uint8_t> z = detail::zlib_compress(raw.data(), raw.size(), static_cast<size_t>(width) + 1);
    std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    auto chunk = [&out](const char* type, const std::vector<uint8_t>& data) {
        for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(data.size() >> s));
        size_t start = out.size();
        out.insert(out.end(), type, type + 4);
        out.insert(out.end(), data.begin(), data.end());
        uint32_t crc = detail::crc32(&out[start], out.size() - start);
        for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(crc >> s));
    };
    std::vector<uint8_t> ihdr(13, 0);
    for (int s = 0; s < 4; ++s) {
        ihdr[s] = static_cast<uint8_t>(static_cast<uint32_t>(width) >> (24 - 8 * s));
        ihdr[4 + s] = static_cast<uint8_t>(static_cast<uint32_t>(height) >> (24 - 8 * s));
    }
    ihdr[8] = 8;    // bit depth
    ihdr[9] = 0;    // gray
    chunk("IHDR", ihdr);
    chunk("IDAT", z);
    chunk("IEND", {});
    const std::string tmp = path + ".part";
    {
        std::ofstream o(tmp, std::ios::binary | std::ios::trunc);
        if (!o) throw ImageError(path + ": cannot write (" + std::strerror(errno) + ")");
        o.write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size()));
        o.close();
        if (!o) {
            std::remove(tmp.c_str());
            throw ImageError(path + ": write failed (disk full?)");
        }
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::remove(tmp.c_str());
        throw ImageError(path + ": cannot write (" + std::strerror(errno) + ")");
    }
}

}  // namespace cmunext::example
