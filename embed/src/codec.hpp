// Byte-level codecs the artifact checks and the example's PNG files need, with no third-party
// library: SHA-256 (FIPS 180-4), base64 (RFC 4648), CRC-32 and Adler-32, a bounds-checked DEFLATE
// decoder (RFC 1951) with the zlib wrapper (RFC 1950), and a small DEFLATE encoder (fixed Huffman
// codes with run-length matches) that is enough for binary masks; UTF-8 well-formedness.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace cmunext::detail {

struct CodecError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

class Sha256 {
public:
    Sha256();
    void update(const void* data, size_t size);
    std::string hexdigest();              // finishes the hash; call once
private:
    void block(const uint8_t* p);
    uint32_t h_[8];
    uint8_t buf_[64];
    size_t buffered_ = 0;
    uint64_t total_ = 0;
};

std::string sha256_hex(const void* data, size_t size);

std::vector<uint8_t> base64_decode(const std::string& text);   // strict (Python's validate=True)

uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc = 0);
uint32_t adler32(const uint8_t* data, size_t size, uint32_t adler = 1);

// Raw DEFLATE stream -> bytes; refuses output beyond `max_output` (a decompression bomb) and any
// malformed stream. `consumed` receives the number of input bytes used.
std::vector<uint8_t> inflate_raw(const uint8_t* data, size_t size, size_t max_output, size_t* consumed = nullptr);
// zlib stream (header, DEFLATE data, Adler-32) -> bytes, the checksum verified.
std::vector<uint8_t> zlib_decompress(const uint8_t* data, size_t size, size_t max_output);
// bytes -> zlib stream (fixed Huffman codes, literal runs and distance-1 / distance-`period` matches)
std::vector<uint8_t> zlib_compress(const uint8_t* data, size_t size, size_t period = 0);

// Length of the well-formed UTF-8 sequence starting at s[i] (1-4), or 0 if the byte there starts none
// (a stray continuation byte, an overlong form, a surrogate, a truncated sequence, above U+10FFFF).
size_t utf8_length(const std::string& s, size_t i);
// "" when `s` is well-formed UTF-8, else the first byte that is not ("byte 0xe9 at offset 23"): where
// Python's strict decode of the same text fails
std::string utf8_problem(const std::string& s);
// `s` as valid UTF-8: each byte that starts no well-formed sequence becomes U+FFFD (what Python's
// errors="replace" gives); well-formed text comes back unchanged.
std::string valid_utf8(const std::string& s);

}  // namespace cmunext::detail
