#include "attest/evidence.h"

#include <gtest/gtest.h>

#include "attest/sim/sim_platform.h"

namespace scone::attest {
namespace {

class EvidenceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    report_.measurement = crypto::Sha256({AsBytes("program")});
    report_.mrsigner = MrSignerOf(signer_.public_key());
    report_.product_id = 7;
    report_.svn = 3;
    report_.report_data[0] = 0x42;
    policy_.mrenclaves = {report_.measurement};
    policy_.tolerate = {"sim"};
  }
  Evidence Attest() { return *platform_.Attest(report_); }

  crypto::SigningKey signer_ = crypto::SigningKey::Generate();
  sim::SimPlatform platform_{crypto::SigningKey::Generate()};
  Report report_;
  AttestationPolicy policy_;
};

TEST_F(EvidenceTest, AcceptsTheNamedMeasurementOnATrustedPlatform) {
  Evidence e = Attest();
  EXPECT_EQ(e.report.mode, "sim");
  auto decoded = Evidence::Decode(e.Encode());
  ASSERT_TRUE(decoded.ok());
  EXPECT_TRUE(VerifyEvidence(*decoded, {platform_.platform_key()}, report_.report_data, policy_).ok());
}

TEST_F(EvidenceTest, RefusesEveryViolation) {
  Evidence e = Attest();
  auto refused = [&](const Evidence& ev, const std::vector<crypto::PublicKey>& trusted,
                     const ReportData& rd, const AttestationPolicy& p, const char* why) {
    Status s = VerifyEvidence(ev, trusted, rd, p);
    EXPECT_EQ(s.code(), Code::kPermissionDenied) << why;
    EXPECT_NE(s.message().find(why), std::string::npos) << s.message();
  };
  refused(e, {sim::SimPlatform(crypto::SigningKey::Generate()).platform_key()}, report_.report_data,
          policy_, "not trusted");
  Evidence tampered = e;
  tampered.report.svn = 9;
  refused(tampered, {platform_.platform_key()}, report_.report_data, policy_, "does not verify");
  ReportData other{};
  refused(e, {platform_.platform_key()}, other, policy_, "replayed");
  AttestationPolicy no_sim = policy_;
  no_sim.tolerate.clear();
  refused(e, {platform_.platform_key()}, report_.report_data, no_sim, "tolerate");
  AttestationPolicy other_program = policy_;
  other_program.mrenclaves = {crypto::Sha256({AsBytes("other")})};
  refused(e, {platform_.platform_key()}, report_.report_data, other_program, "not one the policy names");
  AttestationPolicy by_signer = policy_;
  by_signer.mrenclaves.clear();
  by_signer.mrsigner = report_.mrsigner;
  by_signer.product_id = 7;
  by_signer.min_svn = 3;
  EXPECT_TRUE(VerifyEvidence(e, {platform_.platform_key()}, report_.report_data, by_signer).ok());
  by_signer.min_svn = 4;
  refused(e, {platform_.platform_key()}, report_.report_data, by_signer, "below");
  by_signer.min_svn = 3;
  by_signer.product_id = 8;
  refused(e, {platform_.platform_key()}, report_.report_data, by_signer, "product id");
  by_signer.product_id = 7;
  by_signer.mrsigner = MrSignerOf(crypto::SigningKey::Generate().public_key());
  refused(e, {platform_.platform_key()}, report_.report_data, by_signer, "signer does not match");
  Report debug = report_;
  debug.debug = true;
  refused(*platform_.Attest(debug), {platform_.platform_key()}, report_.report_data, policy_,
          "debug");
}

TEST_F(EvidenceTest, SimBackendCannotClaimHardware) {
  Report claims = report_;
  claims.mode = "sgx";
  EXPECT_EQ(platform_.Attest(claims)->report.mode, "sim");
}

TEST_F(EvidenceTest, MalformedEvidenceIsRejected) {
  Bytes good = Attest().Encode();
  for (size_t n = 0; n < good.size(); n += 5) {
    EXPECT_FALSE(Evidence::Decode(ByteSpan(good.data(), n)).ok()) << n;
  }
}

TEST(SigStructTest, SignsAndVerifies) {
  crypto::SigningKey key = crypto::SigningKey::Generate();
  SigStruct s = SigStruct::Sign(key, crypto::Sha256({AsBytes("m")}), 1, 2);
  EXPECT_TRUE(s.Verify());
  auto decoded = SigStruct::Decode(s.Encode());
  ASSERT_TRUE(decoded.ok());
  EXPECT_TRUE(decoded->Verify());
  EXPECT_EQ(decoded->MrSigner(), MrSignerOf(key.public_key()));
  SigStruct forged = s;
  forged.svn = 3;
  EXPECT_FALSE(forged.Verify());
}

}  // namespace
}  // namespace scone::attest
