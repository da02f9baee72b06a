// SIGSTRUCT analogue: a signer vouches for a measurement under a product id and a security
// version. Policies can then name the signer (MRSIGNER = SHA-256 of its public key), a product
// and a minimum security version, instead of every measurement.
#pragma once

#include "common/bytes.h"
#include "crypto/primitives.h"
#include "crypto/signing.h"

namespace scone::attest {

using Measurement = crypto::Hash;

struct SigStruct {
  Measurement measurement{};
  uint16_t product_id = 0;
  uint16_t svn = 0;
  crypto::PublicKey signer{};
  crypto::Signature signature{};

  static SigStruct Sign(const crypto::SigningKey& key, const Measurement& m, uint16_t product_id,
                        uint16_t svn);
  // The signature checks out for the signer it names.
  bool Verify() const;
  crypto::Hash MrSigner() const;

  Bytes Encode() const;
  static Result<SigStruct> Decode(ByteSpan bytes);

 private:
  Bytes SignedPart() const;
};

crypto::Hash MrSignerOf(const crypto::PublicKey& key);

}  // namespace scone::attest
