// The FlagCX point-to-point engine API, as implemented by this project's
// software provider (libflagcx.so built from flagcx-sys/provider).
//
// Written for this project from the documented API (see README.md): the
// same global-namespace C++ functions, types and parameter types as FlagCX's
// own header, so code compiled against either links against either library.
// Only what the transport, its tests and the baseline need is declared; the
// provider does not implement FlagCX's notification, IPC or Send/Recv calls.
//
// Vector signatures follow FlagCX main (July 2026 onward): WriteVector and
// WriteVectorSync take const references, ReadVector takes vectors by value.
// The provider also exports the other variants' symbols (see
// provider/src/abi_variants.cpp) so a shim compiled against an older or newer
// FlagCX header links to it as well.

#ifndef FLAGCX_P2P_H_
#define FLAGCX_P2P_H_

#include <stddef.h>
#include <stdint.h>

#include <vector>

#define FLAGCX_P2P_MSG_SIZE 256
#define FLAGCX_P2P_DESC_SIZE 64
#define FLAGCX_P2P_IPC_INFO_SIZE 128

// Opaque handles; only ever used through pointers.
typedef struct FlagcxP2pEngine FlagcxP2pEngine;
typedef struct FlagcxP2pConn FlagcxP2pConn;

// A registered memory region: a process-wide counter starting at 1.
typedef uint64_t FlagcxP2pMr;

// What an initiator needs to address a remote region: address, length and key.
struct FlagcxP2pRdmaDesc {
  uint64_t addr;
  uint32_t size;
  uint32_t rkey;
  uint32_t nmsgs;
  uint32_t rid;
  uint64_t idx;
  char padding[32];
};
static_assert(sizeof(FlagcxP2pRdmaDesc) == FLAGCX_P2P_DESC_SIZE,
              "FlagcxP2pRdmaDesc is 64 bytes in every FlagCX version");

// ---- engine lifecycle --------------------------------------------------
// Returns NULL when the engine cannot be brought up.
FlagcxP2pEngine *flagcxP2pEngineCreate();
void flagcxP2pEngineDestroy(FlagcxP2pEngine *engine);
void flagcxP2pEngineStopAccept(FlagcxP2pEngine *engine);

// ---- control plane -----------------------------------------------------
// Starts the accept thread that answers peers' handshakes; 0 on success;
// calling it twice is harmless.
int flagcxP2pEngineStartRpcServer(FlagcxP2pEngine *engine);
// The handshake port, or -1.
int flagcxP2pEngineGetRpcPort(FlagcxP2pEngine *engine);
// "host:port?gpuIdx?notifPort" in a new[] buffer the caller delete[]s.
int flagcxP2pEngineGetMetadata(FlagcxP2pEngine *engine, char **metadataStr);
// Cached connection per exact "host:port" string, owned by the engine.
// The first call per session performs a blocking handshake; NULL on failure.
FlagcxP2pConn *flagcxP2pEngineGetConn(FlagcxP2pEngine *engine,
                                      const char *session);
// A fresh connection owned by the caller (free with ConnDestroy).
FlagcxP2pConn *flagcxP2pEngineConnect(FlagcxP2pEngine *engine,
                                      const char *ipAddr, int remoteGpuIdx,
                                      int remotePort, bool sameProcess = false);
void flagcxP2pEngineConnDestroy(FlagcxP2pConn *conn);

// ---- memory registration (process-wide, keyed by base address) ---------
int flagcxP2pEngineReg(FlagcxP2pEngine *engine, uintptr_t data, size_t size,
                       FlagcxP2pMr &mrId);
void flagcxP2pEngineMrDestroy(FlagcxP2pEngine *engine, FlagcxP2pMr mr);

// Finds the peer region (from the snapshot taken at connect time) that holds
// [remoteVa, remoteVa + size) and fills desc; -1 when none does.
int flagcxP2pEngineMakeDesc(FlagcxP2pConn *conn, uint64_t remoteVa,
                            uint32_t size, FlagcxP2pRdmaDesc *desc);

// ---- one-sided transfers -----------------------------------------------
// Non-blocking; 0 and a transfer id on acceptance, -1 on bad arguments.
// Lengths come from sizeVec, never from descs[i].size.
int flagcxP2pEngineWriteVector(FlagcxP2pConn *conn,
                               const std::vector<FlagcxP2pMr> &mrIds,
                               const std::vector<void *> &srcVec,
                               const std::vector<size_t> &sizeVec,
                               const std::vector<FlagcxP2pRdmaDesc> &descs,
                               int numIovs, uint64_t *transferId,
                               const std::vector<char *> &ipcBufs = {});
int flagcxP2pEngineReadVector(FlagcxP2pConn *conn,
                              std::vector<FlagcxP2pMr> mrIds,
                              std::vector<void *> dstVec,
                              std::vector<size_t> sizeVec,
                              std::vector<FlagcxP2pRdmaDesc> descs, int numIovs,
                              uint64_t *transferId,
                              std::vector<char *> ipcBufs = {});
// Blocking write; 0 once every byte landed.
int flagcxP2pEngineWriteVectorSync(FlagcxP2pConn *conn,
                                   const std::vector<FlagcxP2pMr> &mrIds,
                                   const std::vector<void *> &srcVec,
                                   const std::vector<size_t> &sizeVec,
                                   const std::vector<FlagcxP2pRdmaDesc> &descs);

// true once the transfer finished -- also when it failed, and for ids the
// engine does not know. Poll an id from one thread at a time and never again
// after it returned true.
bool flagcxP2pEngineXferStatus(FlagcxP2pConn *conn, uint64_t transferId);

#endif // FLAGCX_P2P_H_
