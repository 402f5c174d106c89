// The trust policy of verified load (cmunext_edge.artifacts.signing): with trusted public keys,
// an artifact runs only when `<entry>.sig` (an OpenSSF model-signing signature: a Sigstore bundle
// whose DSSE envelope signs an in-toto statement listing each signed file's sha256) verifies with
// one of the keys (ECDSA over the DSSE pre-authentication encoding), covers every file the
// runtime reads, and every file it lists hashes as signed. Checked on the bytes read once by
// read_artifact, before OpenVINO parses anything. Needs OpenSSL (libcrypto) at build time; a
// build without it refuses any trust policy instead of ignoring it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "integrity.hpp"

namespace cmunext::detail {

// "a.pem:b.pem" -> its non-empty paths (the format of $CMUNEXT_TRUSTED_KEYS and the C option).
std::vector<std::string> split_key_list(const std::string& list);

// A trusted public key, read and parsed once when the policy is read (its OpenSSL key stays in
// signature.cpp).
struct TrustedKey;

// The keys a signature must verify with; empty: no policy.
struct TrustPolicy {
    std::vector<std::shared_ptr<const TrustedKey>> keys;
    bool empty() const { return keys.empty(); }
};

// The trusted keys: `given` if not empty, else $CMUNEXT_TRUSTED_KEYS (paths separated by ':'),
// else none (no policy), each file read and parsed here, once. A variable set but naming no key, or
// a key file that is missing or no usable public key, throws cmunext::Error (InvalidArgument).
TrustPolicy trust_policy(const std::vector<std::string>& given);

// Without a policy: "unsigned" or "signed, not checked (no trusted key)".
std::string signature_status(const std::string& entry);

// Under a policy: "signed by trusted key <sha256 of its PEM, 16 hex>"; any failure throws
// cmunext::Error (Integrity, or Unsupported for a build without OpenSSL) naming what failed.
std::string check_signature(const std::string& entry, const std::vector<ArtifactFile>& files,
                            const TrustPolicy& policy);

bool signatures_supported();

}  // namespace cmunext::detail
