// The unit tests' main: gtest's, then OpenSSL's clean-up, as the scone command does, so that
// LeakSanitizer sees OpenSSL's per-thread state (random generators) released, not leaked
// (linking libssl changes the order of the library's exit handlers).
#include <gtest/gtest.h>
#include <openssl/crypto.h>

#include "common/parallel.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  int result = RUN_ALL_TESTS();
  // As the scone command does: OpenSSL's state freed deterministically, after the helper
  // thread that holds per-thread state of its own has stopped.
  scone::StopParallelHelper();
  OPENSSL_cleanup();
  return result;
}
