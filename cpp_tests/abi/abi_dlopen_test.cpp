// The C ABI loaded the way a plugin host loads it: dlopen, dlsym of the
// versioned entry point, version and size checks, then calls through the
// table only.

#include <dlfcn.h>

#include "abi_fixture.h"

using namespace mcfx_test;

namespace {

// What a host does with a plugin path; empty string on success.
std::string load_plugin(const char *path, void **handle, const mcfx_api_v1 **api) {
  *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (*handle == nullptr) return std::string("dlopen: ") + dlerror();
  using GetApi = const mcfx_api_v1 *(*)();
  auto get = reinterpret_cast<GetApi>(dlsym(*handle, "mcfx_get_api_v1"));
  if (get == nullptr) return "no mcfx_get_api_v1 symbol";
  const mcfx_api_v1 *table = get();
  if (table == nullptr) return "mcfx_get_api_v1 returned NULL";
  // The v1 table says 1 in every library that exports it, whatever its
  // MCFX_ABI_VERSION.
  if (table->abi_version != 1)
    return "ABI version " + std::to_string(table->abi_version) + ", expected 1";
  if (table->struct_size < sizeof(mcfx_api_v1)) return "function table too small";
  *api = table;
  return "";
}

class AbiDlopen : public ::testing::Test {
protected:
  void SetUp() override {
    std::string err = load_plugin(MCFX_RUST_LIB, &handle_, &api_);
    ASSERT_EQ(err, "") << MCFX_RUST_LIB;
  }
  // The library stays loaded: its threads are gone after destroy, but
  // unloading code that libstdc++/TLS destructors may still reference is not
  // worth the risk in a test process.
  void *handle_ = nullptr;
  const mcfx_api_v1 *api_ = nullptr;
};

} // namespace

TEST_F(AbiDlopen, TableReportsVersionSizeAndName) {
  EXPECT_EQ(api_->abi_version, 1u);
  EXPECT_EQ(api_->struct_size, sizeof(mcfx_api_v1));
  EXPECT_STREQ(api_->impl_name(), "rust");
  EXPECT_STREQ(api_->strerror(MCFX_OK), "success");
}

TEST_F(AbiDlopen, WriteAndReadThroughTheTable) { check_write_read_integrity(api_); }

TEST_F(AbiDlopen, ErrorsThroughTheTableCarryMessages) {
  Node a(api_);
  ASSERT_EQ(a.status, MCFX_OK);
  Buffer b(64);
  size_t accepted = 0;
  EXPECT_EQ(a.submit({make_op(MCFX_OP_WRITE, b, 0, 64, 1, 0, 1)}, &accepted),
            MCFX_E_NOT_REGISTERED);
  EXPECT_NE(a.last_error().find("not inside one registered region"), std::string::npos)
      << a.last_error();
}

TEST(AbiDlopenLoader, RejectsAPluginWithAnotherAbiVersion) {
  void *handle = nullptr;
  const mcfx_api_v1 *api = nullptr;
  EXPECT_EQ(load_plugin(MCFX_FAKE_PLUGIN_V99, &handle, &api), "ABI version 99, expected 1");
  EXPECT_EQ(api, nullptr);
}

TEST(AbiDlopenLoader, RejectsAMissingLibrary) {
  void *handle = nullptr;
  const mcfx_api_v1 *api = nullptr;
  EXPECT_NE(load_plugin("/nonexistent/libmooncake_flagcx.so", &handle, &api).find("dlopen"),
            std::string::npos);
}
