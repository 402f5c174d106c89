// Minimal JSON reader for the artifact metadata (preprocessing contract, self-test digest,
// manifest.json). Strict RFC 8259 syntax, depth-limited, no exceptions escape except JsonError.
#pragma once

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace cmunext::detail {

struct JsonError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// text that is not JSON: what() is "invalid JSON (<reason>)", reason() the part in brackets (for a
// caller that says in its own words that the text is unreadable, e.g. a damaged manifest.json)
struct JsonSyntaxError : JsonError {
    explicit JsonSyntaxError(const std::string& reason) : JsonError("invalid JSON (" + reason + ")"), reason_(reason) {}
    const std::string& reason() const { return reason_; }

private:
    std::string reason_;
};

class Json {
public:
    enum class Type { Null, Bool, Number, String, Array, Object };

    Json() = default;
    static Json parse(const std::string& text);   // throws JsonSyntaxError

    Type type() const { return type_; }
    bool is_null() const { return type_ == Type::Null; }
    bool is_bool() const { return type_ == Type::Bool; }
    bool is_number() const { return type_ == Type::Number; }
    bool is_string() const { return type_ == Type::String; }
    bool is_array() const { return type_ == Type::Array; }
    bool is_object() const { return type_ == Type::Object; }

    bool as_bool() const;
    double as_number() const;
    const std::string& as_string() const;
    const std::vector<Json>& as_array() const;
    const std::map<std::string, Json>& as_object() const;

    bool has(const std::string& key) const;
    const Json& at(const std::string& key) const;     // throws JsonError if absent / not an object
    const Json* find(const std::string& key) const;   // nullptr if absent / not an object

    // Python's `==` on json.loads() results: numbers compare by value (1 == 1.0), bool is not a number
    bool equals(const Json& other) const;
    // compact JSON text (numbers as Python repr-like shortest round-trip form)
    std::string dump() const;

private:
    friend class JsonParser;
    Type type_ = Type::Null;
    bool bool_ = false;
    double number_ = 0.0;
    std::string string_;
    std::vector<Json> array_;
    std::map<std::string, Json> object_;
};

}  // namespace cmunext::detail
