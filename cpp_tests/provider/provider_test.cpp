// The software provider's checks of descriptors a caller made up, and the
// FlagCX calls the transport does not use, through the C++ API itself.
//
// The Rust binding builds every descriptor in place from the connection's
// snapshot (IovList), so its tests cannot hand the provider a forged key or
// a length past the region; a C++ caller of FlagCX can, and a NIC would
// refuse both. Each test is in-process: two engines, one serving.

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "flagcx_p2p.h"
#include "flagcx_sw.h"

namespace {

// Every knob back to its default (copy mode, no faults), as each test needs.
void resetKnobs() {
  for (int k = 0; k < FLAGCX_SW_KNOB_COUNT; ++k) flagcxSwSetKnob(k, 0);
  flagcxSwSetKnob(FLAGCX_SW_KNOB_CONNECT_TIMEOUT_MS, 10000);
  flagcxSwResetViolations();
}

// A registered, page-aligned buffer.
struct Buf {
  Buf(FlagcxP2pEngine *engine, size_t len) : engine(engine), len(len) {
    mem = static_cast<uint8_t *>(std::aligned_alloc(4096, len));
    std::memset(mem, 0, len);
    EXPECT_EQ(flagcxP2pEngineReg(engine, reinterpret_cast<uintptr_t>(mem), len, mr), 0);
  }
  ~Buf() {
    flagcxP2pEngineMrDestroy(engine, mr);
    std::free(mem);
  }
  Buf(const Buf &) = delete;
  Buf &operator=(const Buf &) = delete;
  uint64_t addr() const { return reinterpret_cast<uintptr_t>(mem); }

  FlagcxP2pEngine *engine;
  size_t len;
  uint8_t *mem = nullptr;
  FlagcxP2pMr mr = 0;
};

class Provider : public ::testing::Test {
protected:
  void SetUp() override {
    resetKnobs();
    local = flagcxP2pEngineCreate();
    remote = flagcxP2pEngineCreate();
    ASSERT_NE(local, nullptr);
    ASSERT_NE(remote, nullptr);
    ASSERT_EQ(flagcxP2pEngineStartRpcServer(remote), 0);
  }
  void TearDown() override {
    EXPECT_EQ(flagcxSwViolationsTotal(), 0u);
    flagcxP2pEngineDestroy(local);
    flagcxP2pEngineDestroy(remote);
    resetKnobs();
  }

  // A fresh connection to `remote` (its snapshot is taken now).
  FlagcxP2pConn *connect() {
    FlagcxP2pConn *c = flagcxP2pEngineConnect(local, "127.0.0.1", 0,
                                              flagcxP2pEngineGetRpcPort(remote));
    EXPECT_NE(c, nullptr);
    return c;
  }

  static FlagcxP2pRdmaDesc desc(FlagcxP2pConn *conn, uint64_t addr, uint32_t len) {
    FlagcxP2pRdmaDesc d;
    std::memset(&d, 0, sizeof d);
    EXPECT_EQ(flagcxP2pEngineMakeDesc(conn, addr, len, &d), 0);
    return d;
  }

  // One vector write (or read) of `n` entries; the poll result it ends with.
  static int transfer(bool write, FlagcxP2pConn *conn, const Buf &src,
                      const std::vector<size_t> &offs, const std::vector<size_t> &lens,
                      const std::vector<FlagcxP2pRdmaDesc> &descs) {
    std::vector<FlagcxP2pMr> mrs(lens.size(), src.mr);
    std::vector<void *> locals;
    for (size_t off : offs) locals.push_back(src.mem + off);
    uint64_t id = 0;
    int n = static_cast<int>(lens.size());
    int rc = write ? flagcxP2pEngineWriteVector(conn, mrs, locals, lens, descs, n, &id)
                   : flagcxP2pEngineReadVector(conn, mrs, locals, lens, descs, n, &id);
    if (rc != 0) return -1;
    for (;;) {
      int r = flagcxSwXferResult(conn, id);
      if (r != FLAGCX_SW_XFER_PENDING) return r;
      std::this_thread::yield();
    }
  }

  FlagcxP2pEngine *local = nullptr;
  FlagcxP2pEngine *remote = nullptr;
};

// Copy mode and NIC mode check descriptors alike.
class ProviderModes : public Provider, public ::testing::WithParamInterface<uint64_t> {
protected:
  void SetUp() override {
    Provider::SetUp();
    flagcxSwSetKnob(FLAGCX_SW_KNOB_NIC_GBPS, GetParam());
  }
};

TEST_P(ProviderModes, ForgedKeyFailsTheTransferAndMovesNothing) {
  Buf src(local, 4096), dst(remote, 4096);
  std::memset(src.mem, 0xab, src.len);
  FlagcxP2pConn *conn = connect();
  FlagcxP2pRdmaDesc forged = desc(conn, dst.addr(), 4096);
  forged.rkey ^= 0x5a5a;
  EXPECT_EQ(transfer(true, conn, src, {0}, {16}, {forged}), FLAGCX_SW_XFER_FAILED);
  EXPECT_EQ(transfer(false, conn, src, {0}, {16}, {forged}), FLAGCX_SW_XFER_FAILED);
  forged.rkey = 0; // no region has key 0
  EXPECT_EQ(transfer(true, conn, src, {0}, {16}, {forged}), FLAGCX_SW_XFER_FAILED);
  EXPECT_EQ(dst.mem[0], 0);
  EXPECT_EQ(src.mem[0], 0xab);
  flagcxP2pEngineConnDestroy(conn);
}

TEST_P(ProviderModes, LengthPastTheRegionFailsTheTransfer) {
  // The length comes from sizeVec, not from the descriptor.
  Buf src(local, 8192), dst(remote, 4096);
  FlagcxP2pConn *conn = connect();
  FlagcxP2pRdmaDesc d = desc(conn, dst.addr(), 4096);
  EXPECT_EQ(transfer(true, conn, src, {0}, {8192}, {d}), FLAGCX_SW_XFER_FAILED);
  FlagcxP2pRdmaDesc tail = desc(conn, dst.addr() + 4096 - 64, 64);
  EXPECT_EQ(transfer(true, conn, src, {0}, {128}, {tail}), FLAGCX_SW_XFER_FAILED);
  EXPECT_EQ(transfer(true, conn, src, {0}, {4096}, {d}), FLAGCX_SW_XFER_DONE);
  flagcxP2pEngineConnDestroy(conn);
}

TEST_P(ProviderModes, OneForgedEntryFailsAVectorBeforeAnyEntryMoves) {
  Buf src(local, 4096), dst(remote, 4096);
  std::memset(src.mem, 0xcd, src.len);
  FlagcxP2pConn *conn = connect();
  FlagcxP2pRdmaDesc good = desc(conn, dst.addr(), 16);
  FlagcxP2pRdmaDesc forged = desc(conn, dst.addr() + 16, 16);
  forged.rkey ^= 0x5a5a;
  EXPECT_EQ(transfer(true, conn, src, {0, 16}, {16, 16}, {good, forged}),
            FLAGCX_SW_XFER_FAILED);
  EXPECT_EQ(dst.mem[0], 0) << "the good entry did not land either";
  flagcxP2pEngineConnDestroy(conn);
}

INSTANTIATE_TEST_SUITE_P(CopyAndNic, ProviderModes, ::testing::Values(uint64_t{0}, uint64_t{100}),
                         [](const ::testing::TestParamInfo<uint64_t> &p) {
                           return std::string(p.param == 0 ? "Copy" : "Nic");
                         });

TEST_F(Provider, WriteVectorSyncReturnsAfterTheBytesLanded) {
  Buf src(local, 1 << 16), dst(remote, 1 << 16);
  for (size_t i = 0; i < src.len; ++i) src.mem[i] = static_cast<uint8_t>(i * 7);
  FlagcxP2pConn *conn = connect();
  std::vector<FlagcxP2pMr> mrs{src.mr};
  std::vector<void *> locals{src.mem};
  std::vector<size_t> lens{src.len};
  std::vector<FlagcxP2pRdmaDesc> descs{desc(conn, dst.addr(), 1 << 16)};
  ASSERT_EQ(flagcxP2pEngineWriteVectorSync(conn, mrs, locals, lens, descs), 0);
  EXPECT_EQ(std::memcmp(src.mem, dst.mem, src.len), 0);
  descs[0].rkey ^= 0x5a5a;
  EXPECT_EQ(flagcxP2pEngineWriteVectorSync(conn, mrs, locals, lens, descs), -1);
  flagcxP2pEngineConnDestroy(conn);
}

TEST_F(Provider, GetConnCachesOneConnectionPerSession) {
  Buf dst(remote, 4096);
  char *md = nullptr;
  ASSERT_EQ(flagcxP2pEngineGetMetadata(remote, &md), 0);
  std::string session(md);
  delete[] md;
  session = session.substr(0, session.find('?'));
  FlagcxP2pConn *a = flagcxP2pEngineGetConn(local, session.c_str());
  FlagcxP2pConn *b = flagcxP2pEngineGetConn(local, session.c_str());
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a, b);
  FlagcxP2pRdmaDesc d;
  EXPECT_EQ(flagcxP2pEngineMakeDesc(a, dst.addr(), 4096, &d), 0);
  EXPECT_EQ(flagcxP2pEngineGetConn(local, "not-a-session"), nullptr);
}

TEST_F(Provider, AFailedGetConnIsRetried) {
  char *md = nullptr;
  ASSERT_EQ(flagcxP2pEngineGetMetadata(remote, &md), 0);
  std::string session(md);
  delete[] md;
  session = session.substr(0, session.find('?'));
  flagcxSwSetKnob(FLAGCX_SW_KNOB_REFUSE_CONNECT, 1);
  EXPECT_EQ(flagcxP2pEngineGetConn(local, session.c_str()), nullptr);
  flagcxSwSetKnob(FLAGCX_SW_KNOB_REFUSE_CONNECT, 0);
  EXPECT_NE(flagcxP2pEngineGetConn(local, session.c_str()), nullptr);
}

} // namespace
