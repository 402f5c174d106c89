#include "signature.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <sstream>

#include "cmunext/edge_segmenter.hpp"
#include "codec.hpp"
#include "json.hpp"

#ifdef CMUNEXT_HAVE_OPENSSL
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#endif

namespace cmunext::detail {

struct TrustedKey {
    std::string path;
#ifdef CMUNEXT_HAVE_OPENSSL
    EVP_PKEY* pkey = nullptr;
    std::string fingerprint;   // sha256 of its SubjectPublicKeyInfo PEM, as cmunext_edge.artifacts.signing
    ~TrustedKey() { EVP_PKEY_free(pkey); }
#endif
    explicit TrustedKey(std::string p) : path(std::move(p)) {}
    TrustedKey(const TrustedKey&) = delete;
    TrustedKey& operator=(const TrustedKey&) = delete;
};

namespace {
const char* kEnvVar = "CMUNEXT_TRUSTED_KEYS";

std::string sig_path(const std::string& entry) { return entry + ".sig"; }

bool is_file(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

#ifdef CMUNEXT_HAVE_OPENSSL
const char* kPayloadType = "application/vnd.in-toto+json";

bool read_all(const std::string& path, std::string& out) {
    std::string why;
    return read_file(path, out, why);
}

bool is_symlink(const std::string& path) {
    struct stat st;
    return ::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
}

std::string join(const std::vector<std::string>& items) {
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + items[i];
    return out;
}

[[noreturn]] void refuse(const std::string& why) { throw Error(ErrorCode::Integrity, why); }

// What the signature says, before any key has vouched for it.
struct Signed {
    std::string pae;                              // the bytes the key signed
    std::vector<uint8_t> signature;               // DER ECDSA
    std::vector<std::pair<std::string, std::string>> resources;   // file name -> sha256 hex
};

Signed read_signature(const std::string& path) {
    const std::string name = file_name(path);
    std::string text;
    if (!read_all(path, text)) refuse(name + ": cannot read the signature");
    try {
        const Json bundle = Json::parse(text);
        const Json& envelope = bundle.at("dsseEnvelope");
        if (envelope.at("payloadType").as_string() != kPayloadType)
            refuse(name + ": not a model-signing signature (payload type " + envelope.at("payloadType").as_string() + ")");
        const std::vector<uint8_t> payload = base64_decode(envelope.at("payload").as_string());
        const std::vector<Json>& sigs = envelope.at("signatures").as_array();
        if (sigs.size() != 1) refuse(name + ": expected one signature, found " + std::to_string(sigs.size()));
        Signed s;
        s.signature = base64_decode(sigs[0].at("sig").as_string());
        const std::string body(payload.begin(), payload.end());
        // DSSE v1 pre-authentication encoding, as model-signing signs it
        s.pae = "DSSEv1 " + std::to_string(std::string(kPayloadType).size()) + " " + kPayloadType + " " +
                std::to_string(body.size()) + " " + body;
        const Json statement = Json::parse(body);
        for (const Json& r : statement.at("predicate").at("resources").as_array()) {
            if (r.find("algorithm") && r.at("algorithm").as_string() != "sha256")
                refuse(name + ": lists " + r.at("name").as_string() + " hashed with " + r.at("algorithm").as_string() +
                       "; this runtime checks sha256");
            s.resources.emplace_back(r.at("name").as_string(), r.at("digest").as_string());
        }
        return s;
    } catch (const JsonError& e) {
        refuse(name + ": not a readable signature (" + e.what() + ")");
    } catch (const CodecError& e) {
        refuse(name + ": not a readable signature (" + e.what() + ")");
    }
}

// Reads and parses the key at key.path; refuses one that can verify nothing (not PEM, not EC, another curve).
void load_key(TrustedKey& key) {
    const std::string& path = key.path;
    std::string pem;
    if (!read_all(path, pem)) throw Error(ErrorCode::InvalidArgument, "trusted key " + path + ": cannot read it");
    BIO* in = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    key.pkey = in ? PEM_read_bio_PUBKEY(in, nullptr, nullptr, nullptr) : nullptr;
    BIO_free(in);
    if (!key.pkey || EVP_PKEY_base_id(key.pkey) != EVP_PKEY_EC)
        throw Error(ErrorCode::InvalidArgument, "trusted key " + path + ": not a PEM elliptic-curve public key");
    // the curves model-signing signs and verifies with (cmunext_edge.artifacts.signing.SIGNING_CURVES)
    char group[80] = {0};
    size_t group_len = 0;
    if (EVP_PKEY_get_group_name(key.pkey, group, sizeof group, &group_len) != 1) group[0] = 0;
    const std::string curve(group);
    if (curve != "prime256v1" && curve != "secp384r1" && curve != "secp521r1")
        throw Error(ErrorCode::InvalidArgument, "trusted key " + path + ": an EC key on " +
                                                    (curve.empty() ? std::string("an unknown curve") : curve) +
                                                    "; signatures are verified with EC public keys on P-256, P-384, P-521");
    BIO* out = BIO_new(BIO_s_mem());
    char* data = nullptr;
    if (!out || PEM_write_bio_PUBKEY(out, key.pkey) != 1) {
        BIO_free(out);
        throw Error(ErrorCode::Runtime, "trusted key " + path + ": cannot re-encode it");
    }
    long n = BIO_get_mem_data(out, &data);
    key.fingerprint = sha256_hex(data, static_cast<size_t>(n));
    BIO_free(out);
}

bool verifies(const TrustedKey& key, const Signed& s) {
    const int bits = EVP_PKEY_bits(key.pkey);   // model-signing: SHA-256 for P-256, 384 for P-384, 512 for P-521
    const EVP_MD* md = bits > 384 ? EVP_sha512() : bits > 256 ? EVP_sha384() : EVP_sha256();
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestVerifyInit(ctx, nullptr, md, nullptr, key.pkey) == 1 &&
              EVP_DigestVerify(ctx, s.signature.data(), s.signature.size(),
                               reinterpret_cast<const unsigned char*>(s.pae.data()), s.pae.size()) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}
#endif
}  // namespace

bool signatures_supported() {
#ifdef CMUNEXT_HAVE_OPENSSL
    return true;
#else
    return false;
#endif
}

// what Python's str.strip() removes around a key path (ASCII whitespace)
static const char* const kSpace = " \t\r\n\v\f";

std::vector<std::string> split_key_list(const std::string& list) {
    std::vector<std::string> keys;
    std::stringstream ss(list);
    for (std::string k; std::getline(ss, k, ':');) {
        k.erase(0, k.find_first_not_of(kSpace));
        k.erase(k.find_last_not_of(kSpace) + 1);
        if (!k.empty()) keys.push_back(k);
    }
    return keys;
}

TrustPolicy trust_policy(const std::vector<std::string>& given) {
    // An empty entry is a broken policy, never no policy (a key path read from an empty setting).
    for (const std::string& k : given)
        if (k.empty()) throw Error(ErrorCode::InvalidArgument, "trusted key '': an empty path names no public key file");
    std::vector<std::string> paths = given;
    const char* env = std::getenv(kEnvVar);
    std::string value = env ? env : "";
    if (paths.empty() && value.find_first_not_of(kSpace) != std::string::npos) {
        paths = split_key_list(value);
        if (paths.empty())
            throw Error(ErrorCode::InvalidArgument, std::string(kEnvVar) + "='" + value + "' names no public key file");
    }
    TrustPolicy policy;
    for (const std::string& k : paths) {
        struct stat st {};
        if (::stat(k.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
            throw Error(ErrorCode::InvalidArgument, "trusted key " + k + ": a folder, not a public key file "
                                                    "(give the .pub.pem file)");
        if (!is_file(k)) throw Error(ErrorCode::InvalidArgument, "trusted key " + k + ": no such file");
        auto key = std::make_shared<TrustedKey>(k);
#ifdef CMUNEXT_HAVE_OPENSSL
        load_key(*key);              // a key that can verify nothing is a broken policy, refused up front
#endif
        policy.keys.push_back(std::move(key));
    }
    return policy;
}

std::string signature_status(const std::string& entry) {
    return is_file(sig_path(entry)) ? "signed, not checked (no trusted key)" : "unsigned";
}

std::string check_signature(const std::string& entry, const std::vector<ArtifactFile>& files,
                            const TrustPolicy& policy) {
#ifndef CMUNEXT_HAVE_OPENSSL
    (void)files;
    (void)policy;
    throw Error(ErrorCode::Unsupported, entry + ": a trust policy is set but this library was built without OpenSSL, "
                                                "so it cannot check signatures; rebuild with OpenSSL (libssl-dev) "
                                                "or drop the policy");
#else
    const std::string sig = sig_path(entry), sig_name = file_name(sig), dir = parent_dir(entry);
    if (!is_file(sig)) refuse("unsigned: no signature " + sig_name + " beside it, and a trust policy is set");
    std::vector<std::string> links;
    for (const ArtifactFile& f : files)
        if (is_symlink(f.path)) links.push_back(f.name);
    if (is_symlink(sig)) links.push_back(sig_name);
    if (!links.empty())
        refuse(join(links) + " in " + dir + " is a symbolic link: a signature is checked over regular files only; "
                             "point at the folder the files really lie in");
    const Signed s = read_signature(sig);

    std::string fingerprint;
    std::vector<std::string> names;
    for (const auto& key : policy.keys) {   // parsed by trust_policy: each key file is read once per open
        names.push_back(file_name(key->path));
        if (fingerprint.empty() && verifies(*key, s)) fingerprint = key->fingerprint;
    }
    if (fingerprint.empty())
        refuse(sig_name + " is not signed by a trusted key (" + join(names) +
               "): signed by another key, or the signature was altered");

    std::vector<std::string> uncovered, changed;
    for (const ArtifactFile& f : files)
        if (std::none_of(s.resources.begin(), s.resources.end(), [&](const auto& r) { return r.first == f.name; }))
            uncovered.push_back(f.name);
    if (!uncovered.empty()) refuse(sig_name + " does not cover " + join(uncovered));
    for (const auto& [name, digest] : s.resources) {
        if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) {
            changed.push_back(name);   // files of an artifact lie beside it
            continue;
        }
        auto loaded = std::find_if(files.begin(), files.end(), [&](const ArtifactFile& f) { return f.name == name; });
        std::string bytes;
        if (loaded == files.end() && (!is_file(dir + "/" + name) || !read_all(dir + "/" + name, bytes))) {
            changed.push_back(name);
            continue;
        }
        const std::string& data = loaded != files.end() ? loaded->bytes : bytes;
        if (sha256_hex(data.data(), data.size()) != digest) changed.push_back(name);
    }
    if (!changed.empty()) refuse(join(changed) + " changed after signing (sha256 differs from " + sig_name + ")");
    return "signed by trusted key " + fingerprint.substr(0, 16);
#endif
}

}  // namespace cmunext::detail
