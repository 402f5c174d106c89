#include "integrity.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cmunext/edge_segmenter.hpp"
#include "codec.hpp"
#include "json.hpp"

namespace cmunext::detail {

namespace {
const std::string kPlaceholder(64, '0');
}  // namespace

bool read_file(const std::string& path, std::string& out, std::string& why) {
    std::error_code ec;   // a folder reads as 0 bytes, a FIFO blocks, /dev/zero never ends: regular files only
    const std::filesystem::file_status st = std::filesystem::status(path, ec);
    if (!ec && std::filesystem::exists(st) && !std::filesystem::is_regular_file(st)) {
        why = std::filesystem::is_directory(st) ? "a folder, not a file" : "not a regular file (a device, FIFO or socket)";
        return false;
    }
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        why = std::strerror(errno);
        return false;
    }
    std::ostringstream ss;
    ss << f.rdbuf();
    if (f.bad()) {
        why = "read error";
        return false;
    }
    out = ss.str();
    return true;
}

namespace {
std::string with_suffix(const std::string& path, const std::string& suffix) {
    size_t slash = path.find_last_of('/');
    size_t dot = path.find_last_of('.');
    if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return path + suffix;
    return path.substr(0, dot) + suffix;
}

std::string replace_all(const std::string& data, const std::string& from, const std::string& to) {
    std::string out;
    out.reserve(data.size());
    size_t pos = 0;
    for (;;) {
        size_t hit = data.find(from, pos);
        if (hit == std::string::npos) break;
        out.append(data, pos, hit - pos);
        out += to;
        pos = hit + from.size();
    }
    out.append(data, pos, std::string::npos);
    return out;
}
}  // namespace

std::string file_name(const std::string& path) {
    size_t slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string parent_dir(const std::string& path) {
    size_t slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

std::string suffix_lower(const std::string& path) {
    std::string name = file_name(path);
    size_t dot = name.find_last_of('.');
    if (dot == std::string::npos) return "";
    std::string s = name.substr(dot);
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    return s;
}

std::vector<ArtifactFile> read_artifact(const std::string& entry) {
    std::vector<std::string> paths = {entry};
    if (suffix_lower(entry) == ".xml") paths.push_back(with_suffix(entry, ".bin"));
    std::vector<ArtifactFile> files;
    for (const std::string& p : paths) {
        ArtifactFile f{p, file_name(p), {}};
        std::string why;
        if (!read_file(p, f.bytes, why))
            throw Error(ErrorCode::Io, p + ": cannot read (" + why + ")" +
                                       (p == entry ? "" : ": it belongs to the artifact " + entry));
        files.push_back(std::move(f));
    }
    return files;
}

namespace {
std::string manifest_path(const std::string& dir) {
    if (dir == ".") return "manifest.json";   // as Python's Path(".") / "manifest.json" names it
    return dir + (dir.back() == '/' ? "" : "/") + "manifest.json";
}

// a name as Python's repr() quotes it in a message ('name', or "name" when it holds a ' and no ")
std::string quoted(const std::string& name) {
    const char q = name.find('\'') != std::string::npos && name.find('"') == std::string::npos ? '"' : '\'';
    std::string out(1, q);
    for (const char c : name) {
        const unsigned char u = static_cast<unsigned char>(c);
        if (c == q || c == '\\') out += std::string("\\") + c;
        else if (c == '\n') out += "\\n";
        else if (c == '\r') out += "\\r";
        else if (c == '\t') out += "\\t";
        else if (u < 0x20 || u == 0x7f) {
            char hex[8];
            std::snprintf(hex, sizeof hex, "\\x%02x", u);
            out += hex;
        } else out += c;
    }
    return out + q;
}

// why parsed JSON is not an export manifest ("" when it is one): 'artifacts' maps names to entries,
// each an object whose "files" is a list (Python's _shape_problem; a std::map visits the names sorted,
// so with several damaged entries the one named may differ from Python's, which follows the file)
std::string shape_problem(const Json& manifest) {
    const Json* artifacts = manifest.find("artifacts");
    if (!artifacts || !artifacts->is_object()) return "not a manifest ('artifacts' must map artifact names to entries)";
    for (const auto& [name, entry] : artifacts->as_object()) {
        if (!entry.is_object()) return "its entry for " + quoted(name) + " is not an object";
        const Json* listed = entry.find("files");
        if (!listed || !listed->is_array()) return "its entry for " + quoted(name) + " has no list of files ('files')";
    }
    return "";
}

// dir/manifest.json into `manifest` (left null when there is none); "" when it is absent or a
// manifest, else why it is damaged, in one line (Python's read_manifest / manifest_lookup)
std::string read_manifest(const std::string& dir, Json& manifest) {
    const std::string path = manifest_path(dir);
    std::error_code ec;   // a link to nothing is damaged, not absent
    if (!std::filesystem::exists(std::filesystem::symlink_status(path, ec))) return "";
    std::string text, why;
    if (!read_file(path, text, why)) return path + " is damaged: not readable JSON (" + why + ")";
    if (const std::string bad = utf8_problem(text); !bad.empty())
        return path + " is damaged: not readable JSON (not UTF-8 text: " + bad + ")";
    try {
        manifest = Json::parse(text);
    } catch (const JsonSyntaxError& e) {
        return path + " is damaged: not readable JSON (" + e.reason() + ")";
    }
    const std::string problem = shape_problem(manifest);
    return problem.empty() ? "" : path + " is damaged: " + problem;
}

// why there is no manifest entry to check: the manifest's damage, else that none is beside it
std::string no_entry_reason(const std::string& damaged) {
    return damaged.empty() ? "no manifest.json entry beside it" : damaged;
}
}  // namespace

bool check_manifest(const std::string& entry, const std::vector<ArtifactFile>& files, std::vector<std::string>& problems,
                    std::string& damaged) {
    const std::string dir = parent_dir(entry);
    Json manifest;
    damaged = read_manifest(dir, manifest);
    if (!damaged.empty()) return false;   // a damaged manifest cannot vouch; the embedded hash still can
    const Json* item = manifest.is_null() ? nullptr : manifest.at("artifacts").find(file_name(entry));
    if (!item) return false;              // no manifest, or no entry for this artifact in it
    std::string why;
    std::vector<std::string> covered;
    for (const Json& f : item->at("files").as_array()) {   // a list: read_manifest checked every entry
        const Json* name = f.find("name");
        const Json* sha = f.find("sha256");
        if (!name || !name->is_string()) {
            problems.push_back("manifest.json has an entry for " + file_name(entry) + " with a file that has no name");
            continue;
        }
        const std::string& n = name->as_string();
        if (n.empty() || n == "." || n == ".." || n.find('/') != std::string::npos || n.find('\\') != std::string::npos) {
            problems.push_back("manifest.json lists '" + n + "', which is not a file beside the artifact");
            continue;
        }
        covered.push_back(n);
        std::string actual;
        auto loaded = std::find_if(files.begin(), files.end(), [&](const ArtifactFile& a) { return a.name == n; });
        if (loaded != files.end()) {
            actual = sha256_hex(loaded->bytes.data(), loaded->bytes.size());
        } else {
            std::string bytes;
            if (!read_file(dir + "/" + n, bytes, why)) {
                problems.push_back(n + " is listed in manifest.json but missing");
                continue;
            }
            actual = sha256_hex(bytes.data(), bytes.size());
        }
        const std::string want = sha && sha->is_string() ? sha->as_string() : "None";
        if (actual != want)
            problems.push_back(n + " sha256 " + actual.substr(0, 16) + "... differs from manifest.json (" +
                               want.substr(0, 16) + "...): the file was modified or damaged");
    }
    for (const ArtifactFile& f : files)
        if (std::find(covered.begin(), covered.end(), f.name) == covered.end())
            problems.push_back("manifest.json's entry for " + file_name(entry) + " does not list " + f.name +
                               ": it cannot vouch for it");
    return true;
}

void check_embedded(const std::string& stored, const std::vector<ArtifactFile>& files, std::vector<std::string>& problems,
                    const std::string& damaged) {
    if (stored.size() != 64) {
        problems.push_back(no_entry_reason(damaged) + " and no embedded content hash: its integrity cannot be "
                           "checked (re-export it, or open it with verification off if you know why)");
        return;
    }
    Sha256 h;
    for (const ArtifactFile& f : files) {
        std::string data = replace_all(f.bytes, stored, kPlaceholder);
        h.update(data.data(), data.size());
    }
    std::string actual = h.hexdigest();
    if (actual != stored)
        problems.push_back("content sha256 " + actual.substr(0, 16) + "... differs from the hash embedded at export (" +
                           stored.substr(0, 16) + "...): the file was modified or damaged");
}

}  // namespace cmunext::detail
