// cmunext_segment ARTIFACT IMAGE... --out DIR
//
// Segments images with a verified CMUNeXt artifact through the C++ library and writes
// DIR/masks/<stem>.png (0/255 at the image's size; <stem>_class<k>.png per class for several
// classes; inputs sharing a stem get their whole file name, as in cmunext-predict), printing
// per-image times. IMAGE may be a file or a folder (its images, or the images/
// folder of an official-layout dataset), as for cmunext-predict.
// Exit codes (as cmunext-predict): 0 all done; 1 done but some inputs skipped; 2 nothing done
// (usage, output folder, artifact refused or unusable, or no image could be segmented).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cctype>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

#include "cmunext/edge_segmenter.hpp"
#include "codec.hpp"
#include "image_io.hpp"

namespace fs = std::filesystem;
using cmunext::example::Image;
using cmunext::example::ImageError;

namespace {

const char* kUsage =
    "usage: cmunext_segment ARTIFACT IMAGE... --out DIR [--device CPU|GPU|NPU|AUTO] [--strict-device]\n"
    "                       [--threads N] [--max-pixels N] [--no-verify-load] [--trusted-key PUB.pem]...\n"
    "                       [--times-json FILE] [--quiet]\n"
    "       cmunext_segment --version\n"
    "\n"
    "Segments images with a verified CMUNeXt artifact (.xml OpenVINO IR or .onnx) through the C++\n"
    "library: DIR/masks/<stem>.png, 0/255 at the image's size (<stem>_class<k>.png per class;\n"
    "inputs sharing a stem: <name.ext>.png). Files of a folder that are not read are reported.\n"
    "IMAGE: a file, or a folder of images (or an official-layout dataset with images/).\n"
    "The artifact is verified before use: its files against manifest.json or its embedded hash,\n"
    "then its embedded self-test (--no-verify-load skips this; not recommended).\n"
    "With --trusted-key (repeatable) or CMUNEXT_TRUSTED_KEYS (paths separated by ':'), it runs only\n"
    "if <ARTIFACT>.sig is a signature by one of those keys over every file it reads (docs/signing.md).\n"
    "--threads: 0..1024 (0: the artifact's setting); --max-pixels: 1..1099511627776 (2^40, default 40000000).\n"
    "Exit codes: 0 all done; 1 done but some inputs skipped; 2 nothing done.\n";

constexpr long long kMaxThreads = 1024;               // cmunext_edge.capabilities.MAX_THREADS
constexpr long long kMaxPixelsLimit = 1LL << 40;      // cmunext_edge.cli.common.size_limit

int usage_error(const std::string& msg) {   // one line, as the Python CLIs: the usage is under --help
    std::fprintf(stderr, "cmunext_segment: error: %s (see cmunext_segment --help)\n", msg.c_str());
    return 2;
}

// The one parser of every numeric flag: decimal digits, optionally after '-', nothing else (no
// spaces, '+', hex or trailing text), within [low, high]; "" when `text` is one, else why not. A
// number beyond int64 is out of range like any other, never clamped (strtoll's ERANGE).
std::string parse_integer(const std::string& flag, const std::string& text, long long low, long long high,
                          long long& value) {
    const size_t digits = text.rfind('-', 0) == 0 ? 1 : 0;
    if (text.size() == digits || text.find_first_not_of("0123456789", digits) != std::string::npos)
        return flag + " must be an integer, got '" + text + "'";
    errno = 0;
    const long long n = std::strtoll(text.c_str(), nullptr, 10);
    const bool negative = digits == 1;
    if ((errno == ERANGE && negative) || (errno != ERANGE && n < low))
        return flag + " must be at least " + std::to_string(low) + ", got " + text;
    if (errno == ERANGE || n > high) return flag + " must be at most " + std::to_string(high) + ", got " + text;
    value = n;
    return "";
}

bool is_image_name(const fs::path& p) {
    std::string s = p.extension().string();
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    for (const char* e : {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"})
        if (s == e) return true;
    return false;
}

// The images of one IMAGE argument. Every other entry of a folder is accounted for, as in
// cmunext-predict: a file that is not read goes to `unread` (reported, exit 1), a sub-folder holding
// images to `notes` (a folder is read one level deep); hidden entries are not inputs. A folder
// without images is itself unread.
std::vector<std::string> expand(const std::string& arg, std::vector<std::string>& unread,
                                std::vector<std::string>& notes) {
    fs::path p(arg);
    std::error_code ec;
    if (fs::exists(p, ec) && !fs::is_directory(p, ec) && !fs::is_regular_file(p, ec)) {
        unread.push_back(arg + ": not processed: not a regular file (a FIFO, socket or device)");
        return {};
    }
    if (!fs::is_directory(p, ec)) return {arg};
    if (fs::is_directory(p / "images", ec)) p /= "images";
    std::vector<std::string> out;
    std::vector<std::string> entries;
    for (const auto& e : fs::directory_iterator(p, ec)) entries.push_back(e.path().string());
    std::sort(entries.begin(), entries.end());
    for (const std::string& name : entries) {
        const fs::path e(name);
        if (e.filename().string().rfind('.', 0) == 0) continue;
        if (fs::is_directory(e, ec)) {
            size_t n = 0;
            for (const auto& f : fs::directory_iterator(e, ec)) n += f.is_regular_file(ec) && is_image_name(f.path());
            if (n)
                notes.push_back("sub-folder " + name + " holds " + std::to_string(n) +
                                " image file(s), not read: a folder is read one level deep; give it as its own input");
        } else if (fs::is_symlink(fs::symlink_status(e, ec)) && !fs::exists(e, ec)) {
            unread.push_back(name + ": not processed: broken symbolic link (its target is missing, or the links "
                                    "form a loop)");
        } else if (!fs::is_regular_file(e, ec)) {
            unread.push_back(name + ": not processed: not a regular file (a FIFO, socket or device)");
        } else if (is_image_name(e)) {
            out.push_back(name);
        } else {
            unread.push_back(name + ": not processed: not a supported image format");
        }
    }
    if (out.empty()) unread.push_back(arg + ": no images found in this folder");
    return out;
}

// The mask name of each input (without ".png"), as cmunext-predict names them: the file's stem, or,
// for a stem several inputs share (case-insensitively), the whole file name, then a counter.
std::vector<std::string> output_names(const std::vector<std::string>& images) {
    auto lower = [](std::string s) {
        std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        return s;
    };
    std::map<std::string, int> count;
    for (const std::string& p : images) ++count[lower(fs::path(p).stem().string())];
    std::set<std::string> taken;
    std::vector<std::string> out;
    for (const std::string& p : images) {
        const std::string stem = fs::path(p).stem().string();
        std::string name = count[lower(stem)] == 1 ? stem : fs::path(p).filename().string();
        const std::string base = name;
        for (int k = 2; taken.count(lower(name)); ++k) name = base + "-" + std::to_string(k);
        taken.insert(lower(name));
        out.push_back(name);
    }
    return out;
}

// Why `out` cannot hold the outputs, read before the artifact is loaded ("" when it can): its nearest
// existing folder must be a folder this process may write. Nothing is created here.
std::string out_problem(const fs::path& out) {
    std::error_code ec;
    fs::path p = fs::absolute(out, ec);
    while (!p.empty() && !fs::exists(p, ec)) {
        if (p == p.parent_path()) break;
        p = p.parent_path();
    }
    if (!fs::is_directory(p, ec)) return p.string() + " is not a folder";
    if (access(p.c_str(), W_OK | X_OK) != 0) return p.string() + " is not writable";
    return "";
}

// A JSON string body. A file name need not be UTF-8: a byte that starts no well-formed sequence is
// written as \udcXX, the escape Python's json.dumps gives the same name (os.fsdecode's
// surrogateescape), so the file stays valid UTF-8 JSON and the name can be recovered.
std::string json_escape(const std::string& s) {
    std::string o;
    for (size_t i = 0; i < s.size();) {
        const char c = s[i];
        const size_t n = cmunext::detail::utf8_length(s, i);
        char b[8];
        if (n == 0) { std::snprintf(b, sizeof b, "\\udc%02x", static_cast<unsigned char>(c)); o += b; ++i; continue; }
        if (c == '"' || c == '\\') { o += '\\'; o += c; }
        else if (static_cast<unsigned char>(c) < 0x20) { std::snprintf(b, sizeof b, "\\u%04x", c); o += b; }
        else o.append(s, i, n);
        i += n;
    }
    return o;
}

// A file name or message for one line of terminal output, as cmunext-predict prints it (fileio.printable):
// control characters shown escaped, so a name can never split, forge or erase lines.
std::string printable(const std::string& s) {
    std::string o;
    for (char c : s) {
        const unsigned char u = static_cast<unsigned char>(c);
        if (c == '\n') o += "\\n";
        else if (c == '\r') o += "\\r";
        else if (c == '\t') o += "\\t";
        else if (u < 0x20 || u == 0x7f) { char b[8]; std::snprintf(b, sizeof b, "\\x%02x", u); o += b; }
        else o += c;
    }
    return o;
}

double ms(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace

// The first input that a mask file of this run would replace (its masks/<name>.png, or
// <name>_class<k>.png for several classes, resolves to the same path), else "": checked before
// anything is written.
std::string overwritten_input(const std::vector<std::string>& images, const std::vector<std::string>& names,
                              const fs::path& masks, int classes) {
    std::error_code ec;
    std::map<std::string, std::string> inputs;               // resolved path -> the input as given
    for (const std::string& image : images) inputs.emplace(fs::weakly_canonical(image, ec).string(), image);
    for (size_t i = 0; i < names.size(); ++i)
        for (int k = 0; k < classes; ++k) {
            const std::string name = classes == 1 ? names[i] + ".png" : names[i] + "_class" + std::to_string(k) + ".png";
            const auto hit = inputs.find(fs::weakly_canonical(masks / name, ec).string());
            if (hit != inputs.end()) return hit->second;
        }
    return "";
}

int main(int argc, char** argv) {
    const auto t_start = std::chrono::steady_clock::now();
    std::vector<std::string> positional;
    std::string out_dir, times_json;
    cmunext::Options options;
    bool quiet = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&](const char* name) -> std::string {
            if (i + 1 >= argc) throw std::invalid_argument(std::string(name) + " needs a value");
            return argv[++i];
        };
        try {
            if (a == "-h" || a == "--help") { std::fputs(kUsage, stdout); return 0; }
            else if (a == "--version") {
                std::printf("cmunext_segment %s (image formats: %s; signatures: %s)\n", cmunext::version(),
                            cmunext::example::supported_formats().c_str(),
                            cmunext::signatures_supported() ? "checked (OpenSSL)" : "not supported (built without OpenSSL)");
                return 0;
            }
            else if (a == "--out") out_dir = value("--out");
            else if (a == "--device") options.device = value("--device");
            else if (a == "--strict-device") options.strict_device = true;
            else if (a == "--no-verify-load") options.verify = false;
            else if (a == "--trusted-key") options.trusted_keys.push_back(value("--trusted-key"));
            else if (a == "--quiet") quiet = true;
            else if (a == "--times-json") times_json = value("--times-json");
            else if (a == "--threads" || a == "--max-pixels") {
                // the ranges of cmunext-predict: threads 0 (default)..1024; max-pixels a limit, never
                // "no limit" (0), up to 2^40
                const bool threads = a == "--threads";
                long long n = 0;
                const std::string problem = parse_integer(a, value(a.c_str()), threads ? 0 : 1,
                                                          threads ? kMaxThreads : kMaxPixelsLimit, n);
                if (!problem.empty()) return usage_error(problem);
                if (threads) options.threads = static_cast<int>(n);
                else options.max_pixels = n;
            }
            else if (a.size() > 1 && a[0] == '-' && a != "-") return usage_error("unknown option " + a);
            else positional.push_back(a);
        } catch (const std::invalid_argument& e) {
            return usage_error(e.what());
        }
    }
    if (positional.size() < 2) return usage_error("need an ARTIFACT and at least one IMAGE");
    if (out_dir.empty()) return usage_error("--out DIR is required");

    std::vector<std::string> images, unread, notes;
    for (size_t i = 1; i < positional.size(); ++i) {
        std::vector<std::string> e = expand(positional[i], unread, notes);
        images.insert(images.end(), e.begin(), e.end());
    }
    if (images.empty()) {
        std::fprintf(stderr, "cmunext_segment: error: no images found (%s)%s\n",
                     unread.empty() ? "" : printable(unread[0]).c_str(), notes.empty() ? "" : printable("; " + notes[0]).c_str());
        return 2;
    }
    const std::vector<std::string> names = output_names(images);
    if (const std::string problem = out_problem(out_dir); !problem.empty()) {
        std::fprintf(stderr, "cmunext_segment: error: --out %s: %s\n", out_dir.c_str(), problem.c_str());
        return 2;
    }

    const auto t_load = std::chrono::steady_clock::now();
    std::unique_ptr<cmunext::EdgeSegmenter> seg;
    try {
        seg.reset(new cmunext::EdgeSegmenter(positional[0], options));
    } catch (const cmunext::Error& e) {
        std::fprintf(stderr, "cmunext_segment: error: %s\n", printable(e.what()).c_str());
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "cmunext_segment: error: %s: %s\n", printable(positional[0]).c_str(), printable(e.what()).c_str());
        return 2;
    }
    const double load_ms = ms(t_load, std::chrono::steady_clock::now());
    if (!quiet)
        std::printf("artifact: %s\nloaded %s in %.1f ms\n", seg->describe().c_str(),
                    options.verify ? "and verified" : "(NOT verified)", load_ms);
    if (!options.verify) std::fprintf(stderr, "cmunext_segment: warning: --no-verify-load: the artifact was NOT checked\n");

    const fs::path masks = fs::path(out_dir) / "masks";
    const int classes = seg->info().classes;
    if (const std::string clash = overwritten_input(images, names, masks, classes); !clash.empty()) {
        std::fprintf(stderr, "cmunext_segment: error: %s would be overwritten by its mask; choose another --out\n",
                     clash.c_str());
        return 2;
    }
    std::error_code ec;
    fs::create_directories(masks, ec);
    if (ec || !fs::is_directory(masks)) {
        std::fprintf(stderr, "cmunext_segment: error: cannot create output folder %s (%s)\n", masks.string().c_str(),
                     ec ? ec.message().c_str() : "not a folder");
        return 2;
    }

    for (const std::string& note : notes) std::printf("note: %s\n", printable(note).c_str());
    if (const std::string& damaged = seg->info().manifest_problem; !damaged.empty())   // as cmunext-predict notes it
        std::printf("note: %s; the files were checked against the content hash embedded at export\n",
                    printable(damaged).c_str());
    for (const std::string& line : unread) std::fprintf(stderr, "skipped %s\n", printable(line).c_str());
    int done = 0, skipped = static_cast<int>(unread.size());
    double sum_total = 0;
    std::string rows;
    for (size_t idx = 0; idx < images.size(); ++idx) {
        const std::string& path = images[idx];
        const auto t0 = std::chrono::steady_clock::now();
        try {
            Image img = cmunext::example::read_image(path, options.max_pixels);
            if (img.frames > 1) {     // as cmunext-predict: the frames after the first are inputs not processed
                ++skipped;
                std::fprintf(stderr, "skipped %s: frames 2-%d of %d not processed: the file is read as its first "
                             "image; save each as its own file\n", printable(path).c_str(), img.frames, img.frames);
            }
            const auto t1 = std::chrono::steady_clock::now();
            cmunext::Frame f;
            f.data = img.pixels.data();
            f.width = img.width;
            f.height = img.height;
            f.stride = static_cast<size_t>(img.width) * img.channels;
            f.format = img.channels == 1 ? cmunext::PixelFormat::GRAY8 : cmunext::PixelFormat::RGB8;
            const size_t n = static_cast<size_t>(img.width) * img.height;
            std::vector<uint8_t> mask(n * classes);
            double t[4];
            seg->segment_into(f, mask.data(), nullptr, t);
            const auto t2 = std::chrono::steady_clock::now();
            const std::string& stem = names[idx];
            size_t fg = 0;
            std::vector<uint8_t> plane(n);
            for (int k = 0; k < classes; ++k) {
                for (size_t i = 0; i < n; ++i) {
                    plane[i] = mask[i * classes + k] ? 255 : 0;
                    fg += mask[i * classes + k];
                }
                const std::string name = classes == 1 ? stem + ".png" : stem + "_class" + std::to_string(k) + ".png";
                cmunext::example::write_png_gray((masks / name).string(), plane.data(), img.width, img.height);
            }
            const auto t3 = std::chrono::steady_clock::now();
            const double decode = ms(t0, t1), write = ms(t2, t3), total = ms(t0, t3);
            sum_total += total;
            ++done;
            if (!quiet)
                std::printf("%s: %dx%d, foreground %.2f%%, %.1f ms (decode %.1f, preprocess %.1f, infer %.1f, "
                            "postprocess %.1f, write %.1f)\n",
                            printable(fs::path(path).filename().string()).c_str(), img.width, img.height,
                            100.0 * fg / (static_cast<double>(n) * classes), total, decode, t[0], t[1], t[2], write);
            char row[512];            // the numbers; the path (any length) is appended as a string
            std::snprintf(row, sizeof row,
                          "\", \"width\": %d, \"height\": %d, \"total_ms\": %.3f, \"decode_ms\": %.3f, "
                          "\"preprocess_ms\": %.3f, \"infer_ms\": %.3f, \"postprocess_ms\": %.3f, \"write_ms\": %.3f}",
                          img.width, img.height, total, decode, t[0], t[1], t[2], write);
            rows += std::string(rows.empty() ? "" : ", ") + "{\"image\": \"" + json_escape(path) + row;
        } catch (const ImageError& e) {
            ++skipped;
            std::fprintf(stderr, "skipped %s\n", printable(e.what()).c_str());
        } catch (const cmunext::Error& e) {
            ++skipped;
            std::fprintf(stderr, "skipped %s: %s\n", printable(path).c_str(), printable(e.what()).c_str());
        } catch (const std::exception& e) {
            ++skipped;
            std::fprintf(stderr, "skipped %s: %s\n", printable(path).c_str(), printable(e.what()).c_str());
        }
    }
    const double wall = ms(t_start, std::chrono::steady_clock::now());
    std::printf("%d image(s) segmented, %d skipped; mean %.1f ms/image end to end (decode + segment + write); "
                "load + verify %.1f ms; wall %.1f ms; masks in %s\n",
                done, skipped, done ? sum_total / done : 0.0, load_ms, wall, masks.string().c_str());
    if (!times_json.empty()) {
        std::ofstream o(times_json);
        o << "{\"artifact\": \"" << json_escape(positional[0]) << "\", \"describe\": \"" << json_escape(seg->describe())
          << "\", \"load_ms\": " << load_ms << ", \"wall_ms\": " << wall << ", \"n_images\": " << done
          << ", \"skipped\": " << skipped << ", \"images\": [" << rows << "]}\n";
        o.close();
        if (!o) {      // a requested output that is missing: not "all done"
            std::fprintf(stderr, "cmunext_segment: error: cannot write --times-json %s\n", times_json.c_str());
            ++skipped;
        }
    }
    if (done == 0 && skipped > 0) {
        std::fprintf(stderr, "cmunext_segment: error: no image could be segmented (each is reported above); "
                             "nothing was done\n");
        return 2;
    }
    return skipped ? 1 : 0;
}
