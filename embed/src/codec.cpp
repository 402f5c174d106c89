#include "codec.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>

namespace cmunext::detail {

// ---------------------------------------------------------------------------------------------
// SHA-256
namespace {
constexpr uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
}  // namespace

Sha256::Sha256()
    : h_{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19} {}

void Sha256::block(const uint8_t* p) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
        w[i] = (uint32_t(p[4 * i]) << 24) | (uint32_t(p[4 * i + 1]) << 16) | (uint32_t(p[4 * i + 2]) << 8) | p[4 * i + 3];
    for (int i = 16; i < 64; ++i) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
        uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[i] + w[i];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h_[0] += a; h_[1] += b; h_[2] += c; h_[3] += d; h_[4] += e; h_[5] += f; h_[6] += g; h_[7] += h;
}

void Sha256::update(const void* data, size_t size) {
    const auto* p = static_cast<const uint8_t*>(data);
    total_ += size;
    if (buffered_) {
        size_t take = std::min(size, 64 - buffered_);
        std::memcpy(buf_ + buffered_, p, take);
        buffered_ += take; p += take; size -= take;
        if (buffered_ == 64) { block(buf_); buffered_ = 0; }
    }
    while (size >= 64) { block(p); p += 64; size -= 64; }
    if (size) { std::memcpy(buf_, p, size); buffered_ = size; }
}

std::string Sha256::hexdigest() {
    uint64_t bits = total_ * 8;
    uint8_t pad = 0x80;
    update(&pad, 1);
    uint8_t zero = 0;
    while (buffered_ != 56) update(&zero, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    update(len, 8);
    static const char* hex = "0123456789abcdef";
    std::string out;
    for (uint32_t v : h_)
        for (int s = 28; s >= 0; s -= 4) out += hex[(v >> s) & 0xF];
    return out;
}

std::string sha256_hex(const void* data, size_t size) {
    Sha256 h;
    h.update(data, size);
    return h.hexdigest();
}

// ---------------------------------------------------------------------------------------------
// base64, CRC-32, Adler-32
std::vector<uint8_t> base64_decode(const std::string& text) {
    auto value = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '+') return 62;
        if (c == '/') return 63;
        return -1;
    };
    if (text.size() % 4) throw CodecError("base64: length is not a multiple of 4");
    std::vector<uint8_t> out;
    out.reserve(text.size() / 4 * 3);
    for (size_t i = 0; i < text.size(); i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; ++k) {
            char c = text[i + k];
            if (c == '=') {
                if (i + 4 != text.size() || k < 2) throw CodecError("base64: misplaced padding");
                v[k] = 0;
                ++pad;
            } else {
                if (pad) throw CodecError("base64: data after padding");
                v[k] = value(c);
                if (v[k] < 0) throw CodecError("base64: character outside the alphabet");
            }
        }
        uint32_t n = (uint32_t(v[0]) << 18) | (uint32_t(v[1]) << 12) | (uint32_t(v[2]) << 6) | uint32_t(v[3]);
        out.push_back(static_cast<uint8_t>(n >> 16));
        if (pad < 2) out.push_back(static_cast<uint8_t>(n >> 8));
        if (pad < 1) out.push_back(static_cast<uint8_t>(n));
    }
    return out;
}

uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc) {
    static const std::array<uint32_t, 256> table = [] {
        std::array<uint32_t, 256> t{};
        for (uint32_t n = 0; n < 256; ++n) {
            uint32_t c = n;
            for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[n] = c;
        }
        return t;
    }();
    crc = ~crc;
    for (size_t i = 0; i < size; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

uint32_t adler32(const uint8_t* data, size_t size, uint32_t adler) {
    uint32_t a = adler & 0xFFFF, b = adler >> 16;
    while (size) {
        size_t n = std::min<size_t>(size, 5552);
        size -= n;
        while (n--) { a += *data++; b += a; }
        a %= 65521; b %= 65521;
    }
    return (b << 16) | a;
}

// ---------------------------------------------------------------------------------------------
// DEFLATE decoder
namespace {

constexpr uint16_t kLenBase[29] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31,
                                   35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
constexpr uint8_t kLenExtra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
constexpr uint16_t kDistBase[30] = {1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385,
                                    513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
constexpr uint8_t kDistExtra[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
constexpr int kFastBits = 10;

struct BitReader {
    const uint8_t* data;
    size_t size;
    size_t pos = 0;
    uint64_t buf = 0;
    int count = 0;          // valid bits in buf
    int overrun = 0;        // zero bits fed past the end of the input

    void refill() {
        if (count <= 56 && pos + 8 <= size) {   // bulk: as many whole bytes as fit
            uint64_t word;
            std::memcpy(&word, data + pos, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
            word = __builtin_bswap64(word);
#endif
            const int take = (63 - count) >> 3;
            buf |= (take == 8 ? word : word & ((uint64_t(1) << (8 * take)) - 1)) << count;
            pos += static_cast<size_t>(take);
            count += 8 * take;
            return;
        }
        while (count <= 56) {
            uint64_t byte = 0;
            if (pos < size) byte = data[pos++];
            else overrun += 8;
            buf |= byte << count;
            count += 8;
        }
    }
    uint32_t peek(int n) {
        if (count < n) refill();
        return static_cast<uint32_t>(buf & ((uint64_t(1) << n) - 1));
    }
    void drop(int n) {
        buf >>= n;
        count -= n;
        if (overrun && count < overrun) throw CodecError("deflate: stream is truncated");
    }
    uint32_t bits(int n) {
        if (n == 0) return 0;
        uint32_t v = peek(n);
        drop(n);
        return v;
    }
    void align() { drop(count & 7); }
    size_t consumed() const { return pos - static_cast<size_t>((count - overrun) / 8); }
};

struct Huffman {
    uint16_t fast[1 << kFastBits];    // (symbol << 4) | length for codes up to kFastBits; 0 = slow path
    uint16_t count[16];
    uint16_t symbol[320];

    void build(const uint8_t* lengths, int n) {
        std::memset(count, 0, sizeof count);
        std::memset(fast, 0, sizeof fast);
        for (int i = 0; i < n; ++i) count[lengths[i]]++;
        count[0] = 0;
        int left = 1;
        for (int len = 1; len < 16; ++len) {
            left <<= 1;
            left -= count[len];
            if (left < 0) throw CodecError("deflate: over-subscribed Huffman code");
        }
        uint16_t offs[16];
        offs[1] = 0;
        for (int len = 1; len < 15; ++len) offs[len + 1] = offs[len] + count[len];
        for (int i = 0; i < n; ++i)
            if (lengths[i]) symbol[offs[lengths[i]]++] = static_cast<uint16_t>(i);
        // fast table: canonical codes, bit-reversed because DEFLATE streams are read LSB first
        int code = 0, index = 0;
        for (int len = 1; len <= kFastBits; ++len) {
            for (int k = 0; k < count[len]; ++k, ++index, ++code) {
                int rev = 0;
                for (int b = 0; b < len; ++b) rev |= ((code >> b) & 1) << (len - 1 - b);
                for (int j = rev; j < (1 << kFastBits); j += 1 << len)
                    fast[j] = static_cast<uint16_t>((symbol[index] << 4) | len);
            }
            code <<= 1;
        }
    }

    int decode(BitReader& br) const {
        uint32_t look = br.peek(15);
        uint16_t e = fast[look & ((1 << kFastBits) - 1)];
        if (e) {
            br.drop(e & 15);
            return e >> 4;
        }
        // canonical decode bit by bit (codes longer than kFastBits)
        int code = 0, first = 0, index = 0;
        for (int len = 1; len < 16; ++len) {
            code |= static_cast<int>((look >> (len - 1)) & 1);
            int c = count[len];
            if (code - c < first) {
                br.drop(len);
                return symbol[index + (code - first)];
            }
            index += c;
            first += c;
            first <<= 1;
            code <<= 1;
        }
        throw CodecError("deflate: invalid Huffman code");
    }
};

const Huffman& fixed_litlen() {
    static const Huffman h = [] {
        Huffman t;
        uint8_t len[288];
        for (int i = 0; i < 144; ++i) len[i] = 8;
        for (int i = 144; i < 256; ++i) len[i] = 9;
        for (int i = 256; i < 280; ++i) len[i] = 7;
        for (int i = 280; i < 288; ++i) len[i] = 8;
        t.build(len, 288);
        return t;
    }();
    return h;
}

const Huffman& fixed_dist() {
    static const Huffman h = [] {
        Huffman t;
        uint8_t len[30];
        std::memset(len, 5, sizeof len);
        t.build(len, 30);
        return t;
    }();
    return h;
}

// Output into a buffer sized once (`cap` = the most the caller accepts); `n` bytes are used.
struct Out {
    std::vector<uint8_t> buf;
    size_t n = 0;
    size_t cap;
    explicit Out(size_t max_output) : cap(max_output) { buf.resize(std::min<size_t>(max_output, size_t(1) << 20)); }
    void reserve_more(size_t extra) {
        if (n + extra > cap) throw CodecError("deflate: data larger than expected");
        if (n + extra > buf.size()) buf.resize(std::min(cap, std::max(buf.size() * 2, n + extra)));
    }
};

void inflate_block(BitReader& br, const Huffman& lit, const Huffman& dist, Out& out) {
    for (;;) {
        int sym = lit.decode(br);
        if (sym < 256) {
            out.reserve_more(1);
            out.buf[out.n++] = static_cast<uint8_t>(sym);
        } else if (sym == 256) {
            return;
        } else {
            sym -= 257;
            if (sym >= 29) throw CodecError("deflate: invalid length code");
            size_t len = kLenBase[sym] + br.bits(kLenExtra[sym]);
            int ds = dist.decode(br);
            if (ds >= 30) throw CodecError("deflate: invalid distance code");
            size_t d = kDistBase[ds] + br.bits(kDistExtra[ds]);
            if (d > out.n) throw CodecError("deflate: distance reaches before the start");
            out.reserve_more(len);
            uint8_t* dst = out.buf.data() + out.n;
            const uint8_t* src = dst - d;
            if (d >= len) std::memcpy(dst, src, len);
            else for (size_t k = 0; k < len; ++k) dst[k] = src[k];   // overlapping: byte by byte
            out.n += len;
        }
    }
}

}  // namespace

std::vector<uint8_t> inflate_raw(const uint8_t* data, size_t size, size_t max_output, size_t* consumed) {
    BitReader br{data, size};
    Out out(max_output);
    Huffman lit, dist;
    for (;;) {
        int final = static_cast<int>(br.bits(1));
        int type = static_cast<int>(br.bits(2));
        if (type == 0) {
            br.align();
            uint32_t len = br.bits(16);
            uint32_t nlen = br.bits(16);
            if ((len ^ 0xFFFF) != nlen) throw CodecError("deflate: stored block length check failed");
            out.reserve_more(len);
            for (uint32_t k = 0; k < len; ++k) out.buf[out.n++] = static_cast<uint8_t>(br.bits(8));
        } else if (type == 1) {
            inflate_block(br, fixed_litlen(), fixed_dist(), out);
        } else if (type == 2) {
            int hlit = static_cast<int>(br.bits(5)) + 257;
            int hdist = static_cast<int>(br.bits(5)) + 1;
            int hclen = static_cast<int>(br.bits(4)) + 4;
            if (hlit > 286 || hdist > 30) throw CodecError("deflate: too many codes");
            static const uint8_t order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
            uint8_t cl[19] = {0};
            for (int i = 0; i < hclen; ++i) cl[order[i]] = static_cast<uint8_t>(br.bits(3));
            Huffman clh;
            clh.build(cl, 19);
            uint8_t lengths[320] = {0};
            int n = 0;
            while (n < hlit + hdist) {
                int sym = clh.decode(br);
                if (sym < 16) {
                    lengths[n++] = static_cast<uint8_t>(sym);
                } else {
                    int rep;
                    uint8_t val = 0;
                    if (sym == 16) {
                        if (n == 0) throw CodecError("deflate: repeat with no previous length");
                        val = lengths[n - 1];
                        rep = 3 + static_cast<int>(br.bits(2));
                    } else if (sym == 17) {
                        rep = 3 + static_cast<int>(br.bits(3));
                    } else {
                        rep = 11 + static_cast<int>(br.bits(7));
                    }
                    if (n + rep > hlit + hdist) throw CodecError("deflate: too many lengths");
                    while (rep--) lengths[n++] = val;
                }
            }
            if (lengths[256] == 0) throw CodecError("deflate: no end-of-block code");
            lit.build(lengths, hlit);
            dist.build(lengths + hlit, hdist);
            inflate_block(br, lit, dist, out);
        } else {
            throw CodecError("deflate: invalid block type");
        }
        if (final) break;
    }
    if (consumed) *consumed = br.consumed();
    out.buf.resize(out.n);
    return std::move(out.buf);
}

std::vector<uint8_t> zlib_decompress(const uint8_t* data, size_t size, size_t max_output) {
    if (size < 6) throw CodecError("zlib: stream too short");
    uint8_t cmf = data[0], flg = data[1];
    if ((cmf & 0x0F) != 8 || (cmf >> 4) > 7) throw CodecError("zlib: not a deflate stream");
    if (((cmf << 8) | flg) % 31) throw CodecError("zlib: header check failed");
    if (flg & 0x20) throw CodecError("zlib: preset dictionary not supported");
    size_t used = 0;
    std::vector<uint8_t> out = inflate_raw(data + 2, size - 2, max_output, &used);
    size_t at = 2 + used;
    if (at + 4 > size) throw CodecError("zlib: checksum missing");
    uint32_t want = (uint32_t(data[at]) << 24) | (uint32_t(data[at + 1]) << 16) | (uint32_t(data[at + 2]) << 8) | data[at + 3];
    if (adler32(out.data(), out.size()) != want) throw CodecError("zlib: checksum mismatch");
    return out;
}

// ---------------------------------------------------------------------------------------------
// DEFLATE encoder: one fixed-Huffman block, greedy matches at distance 1 and `period`
namespace {
struct BitWriter {
    std::vector<uint8_t>& out;
    uint64_t buf = 0;
    int count = 0;
    void put(uint32_t value, int n) {     // LSB first
        buf |= uint64_t(value) << count;
        count += n;
        while (count >= 8) {
            out.push_back(static_cast<uint8_t>(buf));
            buf >>= 8;
            count -= 8;
        }
    }
    void put_code(uint32_t code, int n) {  // Huffman codes go MSB first
        uint32_t rev = 0;
        for (int b = 0; b < n; ++b) rev |= ((code >> b) & 1) << (n - 1 - b);
        put(rev, n);
    }
    void flush() {
        if (count) out.push_back(static_cast<uint8_t>(buf));
        buf = 0;
        count = 0;
    }
};

void put_literal(BitWriter& bw, int sym) {
    if (sym < 144) bw.put_code(0x30 + sym, 8);
    else if (sym < 256) bw.put_code(0x190 + (sym - 144), 9);
    else if (sym < 280) bw.put_code(sym - 256, 7);
    else bw.put_code(0xC0 + (sym - 280), 8);
}

void put_match(BitWriter& bw, size_t len, size_t dist) {
    int lc = 28;
    while (kLenBase[lc] > len) --lc;
    put_literal(bw, 257 + lc);
    if (kLenExtra[lc]) bw.put(static_cast<uint32_t>(len - kLenBase[lc]), kLenExtra[lc]);
    int dc = 29;
    while (kDistBase[dc] > dist) --dc;
    bw.put_code(static_cast<uint32_t>(dc), 5);
    if (kDistExtra[dc]) bw.put(static_cast<uint32_t>(dist - kDistBase[dc]), kDistExtra[dc]);
}
}  // namespace

std::vector<uint8_t> zlib_compress(const uint8_t* data, size_t size, size_t period) {
    std::vector<uint8_t> out = {0x78, 0x01};
    BitWriter bw{out};
    bw.put(1, 1);   // final block
    bw.put(1, 2);   // fixed Huffman codes
    if (period > 32768) period = 0;
    size_t i = 0;
    while (i < size) {
        size_t best = 0, best_dist = 0;
        for (size_t dist : {size_t(1), period}) {
            if (dist == 0 || dist > i) continue;
            size_t n = 0;
            while (n < 258 && i + n < size && data[i + n] == data[i + n - dist]) ++n;
            if (n > best) { best = n; best_dist = dist; }
        }
        if (best >= 3) {
            put_match(bw, best, best_dist);
            i += best;
        } else {
            put_literal(bw, data[i]);
            ++i;
        }
    }
    put_literal(bw, 256);
    bw.flush();
    uint32_t a = adler32(data, size);
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(a >> s));
    return out;
}

// ---------------------------------------------------------------------------------------------
// UTF-8
size_t utf8_length(const std::string& s, size_t i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) return 1;
    const size_t n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return 0;
    for (size_t k = 1; k < n; ++k)
        if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
    const unsigned char d = static_cast<unsigned char>(s[i + 1]);
    if ((c == 0xE0 && d < 0xA0) || (c == 0xED && d > 0x9F) || (c == 0xF0 && d < 0x90) || (c == 0xF4 && d > 0x8F)) return 0;
    return n;
}

std::string utf8_problem(const std::string& s) {
    for (size_t i = 0; i < s.size();) {
        const size_t n = utf8_length(s, i);
        if (n == 0) {
            char byte[8];
            std::snprintf(byte, sizeof byte, "0x%02x", static_cast<unsigned char>(s[i]));
            return std::string("byte ") + byte + " at offset " + std::to_string(i);
        }
        i += n;
    }
    return "";
}

std::string valid_utf8(const std::string& s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
        const size_t n = utf8_length(s, i);
        if (n == 0) {
            out += "\xEF\xBF\xBD";   // U+FFFD REPLACEMENT CHARACTER
            ++i;
        } else {
            out.append(s, i, n);
            i += n;
        }
    }
    return out;
}

}  // namespace cmunext::detail
