// File checks of verified load (cmunext_edge integrity): every file of the artifact against the
// sha256 in manifest.json beside it, or, without a manifest entry, against the content hash
// embedded at export (a sha256 over the files in which the hash itself is replaced by 64 zeros).
// The bytes checked are the bytes the runtime then parses: each file is read once.
#pragma once

#include <string>
#include <vector>

namespace cmunext::detail {

struct ArtifactFile {
    std::string path;   // as opened
    std::string name;   // file name
    std::string bytes;
};

// The entry file and its companions (.xml -> .xml, .bin; .onnx -> .onnx), read into memory.
// Throws cmunext::Error (Io) for a missing or unreadable file.
std::vector<ArtifactFile> read_artifact(const std::string& entry);

// the whole file into `out`; false with the reason in `why` when it cannot be read
bool read_file(const std::string& path, std::string& out, std::string& why);

std::string file_name(const std::string& path);
std::string parent_dir(const std::string& path);
std::string suffix_lower(const std::string& path);

// manifest.json beside the entry: false when it has no usable entry for this artifact (then the
// embedded hash decides); true when it has one, with every mismatch appended to `problems`. A damaged
// manifest (as Python's cmunext_edge manifest.py reads it: not UTF-8 JSON, not an object mapping
// 'artifacts' to entries, an entry that is not an object or whose "files" is not a list, a link to
// nothing, a folder) holds no usable entry: false, and `damaged` says so in one line
// ("DIR/manifest.json is damaged: <why>"); "" otherwise.
bool check_manifest(const std::string& entry, const std::vector<ArtifactFile>& files, std::vector<std::string>& problems,
                    std::string& damaged);

// the embedded content hash; appends to `problems` on a mismatch or when there is none (naming the
// manifest's damage, from check_manifest, as the reason there was no entry to check)
void check_embedded(const std::string& stored, const std::vector<ArtifactFile>& files, std::vector<std::string>& problems,
                    const std::string& damaged = "");

}  // namespace cmunext::detail
