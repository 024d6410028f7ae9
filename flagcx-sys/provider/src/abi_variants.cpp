// The vector-signature variants of other FlagCX versions, so a shim compiled
// against any of their headers links to this provider:
//   - up to 0.13.0-rc2: WriteVector, ReadVector, WriteVectorSync all by value;
//   - a later fork:     ReadVector by const reference.
// (The forms of our own header live in transfer.cpp.) In C++ these are just
// overloads with distinct mangled names, declared only here so no caller of
// flagcx_p2p.h ever sees an ambiguous call. All forward to one implementation.

#include "internal.h"

using namespace flagcx_sw;

FLAGCX_SW_API int flagcxP2pEngineWriteVector(
    FlagcxP2pConn *conn, std::vector<FlagcxP2pMr> mrIds,
    std::vector<void *> srcVec, std::vector<size_t> sizeVec,
    std::vector<FlagcxP2pRdmaDesc> descs, int numIovs, uint64_t *transferId,
    std::vector<char *> /*ipcBufs*/) {
  try {
    return submit(true, impl(conn), mrIds, srcVec, sizeVec, descs, numIovs,
                  transferId);
  } catch (...) {
    return -1;
  }
}

FLAGCX_SW_API int flagcxP2pEngineReadVector(
    FlagcxP2pConn *conn, const std::vector<FlagcxP2pMr> &mrIds,
    const std::vector<void *> &dstVec, const std::vector<size_t> &sizeVec,
    const std::vector<FlagcxP2pRdmaDesc> &descs, int numIovs,
    uint64_t *transferId, const std::vector<char *> & /*ipcBufs*/) {
  try {
    return submit(false, impl(conn), mrIds, dstVec, sizeVec, descs, numIovs,
                  transferId);
  } catch (...) {
    return -1;
  }
}

FLAGCX_SW_API int flagcxP2pEngineWriteVectorSync(
    FlagcxP2pConn *conn, std::vector<FlagcxP2pMr> mrIds,
    std::vector<void *> srcVec, std::vector<size_t> sizeVec,
    std::vector<FlagcxP2pRdmaDesc> descs) {
  try {
    return writeSync(impl(conn), mrIds, srcVec, sizeVec, descs);
  } catch (...) {
    return -1;
  }
}
