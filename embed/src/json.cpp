#include "json.hpp"

#include <cctype>
#include <cerrno>
#include <clocale>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace cmunext::detail {

namespace {
constexpr int kMaxDepth = 64;
}

class JsonParser {
public:
    explicit JsonParser(const std::string& s) : s_(s) {}

    Json parse_document() {
        Json v = value(0);
        skip_ws();
        if (pos_ != s_.size()) fail("trailing characters");
        return v;
    }

private:
    const std::string& s_;
    size_t pos_ = 0;

    [[noreturn]] void fail(const char* what) const {
        throw JsonSyntaxError(std::string(what) + " at offset " + std::to_string(pos_));
    }
    void skip_ws() {
        while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
            ++pos_;
    }
    bool consume(const char* lit) {
        size_t n = std::strlen(lit);
        if (s_.compare(pos_, n, lit) == 0) {
            pos_ += n;
            return true;
        }
        return false;
    }

    Json value(int depth) {
        if (depth > kMaxDepth) fail("nesting too deep");
        skip_ws();
        if (pos_ >= s_.size()) fail("unexpected end");
        Json v;
        char c = s_[pos_];
        if (c == '{') {
            v.type_ = Json::Type::Object;
            ++pos_;
            skip_ws();
            if (pos_ < s_.size() && s_[pos_] == '}') { ++pos_; return v; }
            for (;;) {
                skip_ws();
                if (pos_ >= s_.size() || s_[pos_] != '"') fail("expected a key");
                std::string key = string_literal();
                skip_ws();
                if (pos_ >= s_.size() || s_[pos_] != ':') fail("expected ':'");
                ++pos_;
                v.object_[key] = value(depth + 1);   // a repeated key keeps the last value, as Python does
                skip_ws();
                if (pos_ < s_.size() && s_[pos_] == ',') { ++pos_; continue; }
                if (pos_ < s_.size() && s_[pos_] == '}') { ++pos_; break; }
                fail("expected ',' or '}'");
            }
        } else if (c == '[') {
            v.type_ = Json::Type::Array;
            ++pos_;
            skip_ws();
            if (pos_ < s_.size() && s_[pos_] == ']') { ++pos_; return v; }
            for (;;) {
                v.array_.push_back(value(depth + 1));
                skip_ws();
                if (pos_ < s_.size() && s_[pos_] == ',') { ++pos_; continue; }
                if (pos_ < s_.size() && s_[pos_] == ']') { ++pos_; break; }
                fail("expected ',' or ']'");
            }
        } else if (c == '"') {
            v.type_ = Json::Type::String;
            v.string_ = string_literal();
        } else if (consume("true")) {
            v.type_ = Json::Type::Bool;
            v.bool_ = true;
        } else if (consume("false")) {
            v.type_ = Json::Type::Bool;
        } else if (consume("null")) {
            v.type_ = Json::Type::Null;
        } else if (consume("NaN")) {          // Python's json module writes and reads these
            v.type_ = Json::Type::Number;
            v.number_ = std::nan("");
        } else if (consume("Infinity")) {
            v.type_ = Json::Type::Number;
            v.number_ = HUGE_VAL;
        } else if (consume("-Infinity")) {
            v.type_ = Json::Type::Number;
            v.number_ = -HUGE_VAL;
        } else {
            v.type_ = Json::Type::Number;
            v.number_ = number();
        }
        return v;
    }

    double number() {
        size_t start = pos_;
        if (pos_ < s_.size() && s_[pos_] == '-') ++pos_;
        if (pos_ >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[pos_]))) fail("bad number");
        if (s_[pos_] == '0') ++pos_;
        else while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
        if (pos_ < s_.size() && s_[pos_] == '.') {
            ++pos_;
            if (pos_ >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[pos_]))) fail("bad fraction");
            while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
        }
        if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
            ++pos_;
            if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
            if (pos_ >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[pos_]))) fail("bad exponent");
            while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
        }
        std::string text = s_.substr(start, pos_ - start);
        // strtod is correctly rounded (glibc, musl) and the grammar above has no locale-dependent parts
        // except the decimal point: JSON always uses '.', so parse in the "C" convention by hand.
        return parse_c_double(text);
    }

    static double parse_c_double(const std::string& text) {
        const char* dp = std::localeconv()->decimal_point;
        if (dp && dp[0] == '.' && dp[1] == '\0') return std::strtod(text.c_str(), nullptr);
        std::string t = text;
        size_t dot = t.find('.');
        if (dot != std::string::npos) t.replace(dot, 1, dp);
        return std::strtod(t.c_str(), nullptr);
    }

    static void put_utf8(std::string& out, unsigned cp) {
        if (cp < 0x80) out += static_cast<char>(cp);
        else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            out += static_cast<char>(0xF0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
    }

    unsigned hex4() {
        if (pos_ + 4 > s_.size()) fail("short \\u escape");
        unsigned v = 0;
        for (int i = 0; i < 4; ++i) {
            char c = s_[pos_++];
            v <<= 4;
            if (c >= '0' && c <= '9') v |= static_cast<unsigned>(c - '0');
            else if (c >= 'a' && c <= 'f') v |= static_cast<unsigned>(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') v |= static_cast<unsigned>(c - 'A' + 10);
            else fail("bad \\u escape");
        }
        return v;
    }

    std::string string_literal() {
        ++pos_;   // opening quote
        std::string out;
        for (;;) {
            if (pos_ >= s_.size()) fail("unterminated string");
            char c = s_[pos_++];
            if (c == '"') break;
            if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
            if (c != '\\') { out += c; continue; }
            if (pos_ >= s_.size()) fail("unterminated escape");
            char e = s_[pos_++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    unsigned cp = hex4();
                    if (cp >= 0xD800 && cp <= 0xDBFF && pos_ + 6 <= s_.size() && s_[pos_] == '\\' && s_[pos_ + 1] == 'u') {
                        size_t save = pos_;
                        pos_ += 2;
                        unsigned lo = hex4();
                        if (lo >= 0xDC00 && lo <= 0xDFFF) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        else pos_ = save;
                    }
                    put_utf8(out, cp);
                    break;
                }
                default: fail("bad escape");
            }
        }
        return out;
    }
};

Json Json::parse(const std::string& text) { return JsonParser(text).parse_document(); }

bool Json::as_bool() const {
    if (type_ != Type::Bool) throw JsonError("expected a JSON boolean");
    return bool_;
}
double Json::as_number() const {
    if (type_ != Type::Number) throw JsonError("expected a JSON number");
    return number_;
}
const std::string& Json::as_string() const {
    if (type_ != Type::String) throw JsonError("expected a JSON string");
    return string_;
}
const std::vector<Json>& Json::as_array() const {
    if (type_ != Type::Array) throw JsonError("expected a JSON array");
    return array_;
}
const std::map<std::string, Json>& Json::as_object() const {
    if (type_ != Type::Object) throw JsonError("expected a JSON object");
    return object_;
}
bool Json::has(const std::string& key) const { return find(key) != nullptr; }
const Json* Json::find(const std::string& key) const {
    if (type_ != Type::Object) return nullptr;
    auto it = object_.find(key);
    return it == object_.end() ? nullptr : &it->second;
}
const Json& Json::at(const std::string& key) const {
    const Json* v = find(key);
    if (!v) throw JsonError("missing key '" + key + "'");
    return *v;
}

bool Json::equals(const Json& o) const {
    if (type_ != o.type_) return false;
    switch (type_) {
        case Type::Null: return true;
        case Type::Bool: return bool_ == o.bool_;
        case Type::Number: return number_ == o.number_;
        case Type::String: return string_ == o.string_;
        case Type::Array:
            if (array_.size() != o.array_.size()) return false;
            for (size_t i = 0; i < array_.size(); ++i)
                if (!array_[i].equals(o.array_[i])) return false;
            return true;
        case Type::Object:
            if (object_.size() != o.object_.size()) return false;
            for (const auto& [k, v] : object_) {
                auto it = o.object_.find(k);
                if (it == o.object_.end() || !v.equals(it->second)) return false;
            }
            return true;
    }
    return false;
}

static std::string number_text(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
    if (v == std::floor(v) && std::fabs(v) < 1e15) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.1f", v);   // Python repr of an integral float: "255.0"
        return buf;
    }
    char buf[64];
    for (int prec = 1; prec <= 17; ++prec) {      // shortest text that reads back to the same double
        std::snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (std::strtod(buf, nullptr) == v) break;
    }
    return buf;
}

std::string Json::dump() const {
    switch (type_) {
        case Type::Null: return "null";
        case Type::Bool: return bool_ ? "true" : "false";
        case Type::Number: return number_text(number_);
        case Type::String: {
            std::string out = "\"";
            for (char c : string_) {
                if (c == '"' || c == '\\') { out += '\\'; out += c; }
                else if (static_cast<unsigned char>(c) < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned char>(c));
                    out += buf;
                } else out += c;
            }
            return out + "\"";
        }
        case Type::Array: {
            std::string out = "[";
            for (size_t i = 0; i < array_.size(); ++i) out += (i ? ", " : "") + array_[i].dump();
            return out + "]";
        }
        case Type::Object: {
            std::string out = "{";
            bool first = true;
            for (const auto& [k, v] : object_) {
                Json key;
                key.type_ = Type::String;
                key.string_ = k;
                out += (first ? "" : ", ") + key.dump() + ": " + v.dump();
                first = false;
            }
            return out + "}";
        }
    }
    return "null";
}

}  // namespace cmunext::detail
