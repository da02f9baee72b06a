#include "attest/sigstruct.h"

namespace scone::attest {
namespace {
constexpr char kLabel[] = "scone-sigstruct-v1";
}

crypto::Hash MrSignerOf(const crypto::PublicKey& key) { return crypto::Sha256({key}); }

Bytes SigStruct::SignedPart() const {
  ByteWriter w;
  w.Str(kLabel);
  w.Raw(measurement);
  w.U32(product_id);
  w.U32(svn);
  w.Raw(signer);
  return w.Take();
}

SigStruct SigStruct::Sign(const crypto::SigningKey& key, const Measurement& m,
                          uint16_t product_id, uint16_t svn) {
  SigStruct s;
  s.measurement = m;
  s.product_id = product_id;
  s.svn = svn;
  s.signer = key.public_key();
  s.signature = key.Sign(s.SignedPart());
  return s;
}

bool SigStruct::Verify() const { return crypto::VerifySignature(signer, SignedPart(), signature); }

crypto::Hash SigStruct::MrSigner() const { return MrSignerOf(signer); }

Bytes SigStruct::Encode() const {
  Bytes out = SignedPart();
  out.insert(out.end(), signature.begin(), signature.end());
  return out;
}

Result<SigStruct> SigStruct::Decode(ByteSpan bytes) {
  ByteReader r(bytes);
  SigStruct s;
  std::string label;
  uint32_t product, svn;
  if (!r.Str(&label, 64) || label != kLabel || !r.Raw(s.measurement) || !r.U32(&product) ||
      !r.U32(&svn) || product > 0xffff || svn > 0xffff || !r.Raw(s.signer) ||
      !r.Raw(s.signature) || !r.done()) {
    return InvalidArgument("not a SCONE signature structure");
  }
  s.product_id = static_cast<uint16_t>(product);
  s.svn = static_cast<uint16_t>(svn);
  return s;
}

}  // namespace scone::attest
