// Extensions of the software FlagCX provider. Real FlagCX has none of these
// symbols: callers find them at run time with dlsym(RTLD_DEFAULT, ...) and must
// cope with their absence. Plain C so any language can call them.

#ifndef FLAGCX_SW_H_
#define FLAGCX_SW_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
struct FlagcxP2pConn;
#else
typedef struct FlagcxP2pConn FlagcxP2pConn;
#endif

// ---- the failure-aware status query (the one extension a transport uses) --

enum flagcx_sw_xfer_result {
  FLAGCX_SW_XFER_PENDING = 0, // not finished; poll again later
  FLAGCX_SW_XFER_DONE = 1,    // finished, every byte moved (NIC mode: none)
  FLAGCX_SW_XFER_FAILED = 2,  // finished, at least one part failed
};

// Like flagcxP2pEngineXferStatus, but tells a failed transfer from a good one.
// Same rules: one poller per id at a time; once it returned DONE or FAILED the
// id is gone. Unknown ids (and a NULL conn) report DONE, as the bool call does.
int flagcxSwXferResult(struct FlagcxP2pConn *conn, uint64_t transferId);

// ---- misuse accounting (tests assert these stay 0) -------------------------

enum flagcx_sw_violation {
  FLAGCX_SW_VIOLATION_REPEATED_POLL = 0,   // id polled after it reported done
  FLAGCX_SW_VIOLATION_CONCURRENT_POLL = 1, // two threads polled one id at once
  FLAGCX_SW_VIOLATION_UNKNOWN_POLL = 2,    // id never issued by this provider
  FLAGCX_SW_VIOLATION_KINDS = 3,
};

uint64_t flagcxSwViolations(int kind);
uint64_t flagcxSwViolationsTotal(void);
void flagcxSwResetViolations(void);

// ---- knobs and fault injection ---------------------------------------------
// Each knob starts from the environment variable named in its comment (read
// once, at the first provider call) and can be changed at any time here.

enum flagcx_sw_knob {
  // FLAGCX_SW_LATENCY_NS: a transfer reports done this long after submit.
  FLAGCX_SW_KNOB_LATENCY_NS = 0,
  // FLAGCX_SW_FAIL_OP: the Nth transfer (1-based, counted process-wide over
  // WriteVector/ReadVector calls from now on) finishes FAILED. 0 = off.
  FLAGCX_SW_KNOB_FAIL_OP = 1,
  // FLAGCX_SW_HANG_OP: the Nth transfer never finishes. 0 = off.
  FLAGCX_SW_KNOB_HANG_OP = 2,
  // FLAGCX_SW_CONNECT_DELAY_MS: every handshake sleeps this long first.
  FLAGCX_SW_KNOB_CONNECT_DELAY_MS = 3,
  // FLAGCX_SW_REFUSE_CONNECT: non-zero makes every new connection fail.
  FLAGCX_SW_KNOB_REFUSE_CONNECT = 4,
  // FLAGCX_SW_CONNECT_TIMEOUT_MS: handshake socket timeout (default 10000).
  FLAGCX_SW_KNOB_CONNECT_TIMEOUT_MS = 5,
  // FLAGCX_SW_NIC_GBPS: non-zero turns on the modeled NIC, a link of this
  // many gigabits per second (10^9 bit/s) per local engine. 0 (the default)
  // is copy mode, where bytes really move.
  //
  // In NIC mode a transfer moves NO bytes: the remote memory is not written
  // (nor the local memory, for a read). Everything else is as in copy mode:
  // local and remote ranges and keys are checked at submit and a bad access
  // fails the transfer; FAIL_OP / HANG_OP still apply. A good transfer
  // reports done when the link would have finished it: the transfers of one
  // engine (over all its connections) share its link in submit order,
  //   start   = max(now, link free),  link free = start + bytes * 8 / Gbps ns,
  //   done at = link free + NIC_LATENCY_NS  (and never before LATENCY_NS).
  // Submitting costs about what posting a work request costs (no copy, no
  // system call). A cross-process peer's liveness is checked at most once a
  // millisecond per connection: transfers submitted after its death was seen
  // fail; those submitted in the millisecond before may report done. For
  // throughput benchmarks only: every correctness test runs in copy mode.
  FLAGCX_SW_KNOB_NIC_GBPS = 6,
  // FLAGCX_SW_NIC_LATENCY_NS: in NIC mode, added to every transfer's
  // completion time after its last bit left the link. Default 0.
  FLAGCX_SW_KNOB_NIC_LATENCY_NS = 7,
  // FLAGCX_SW_NEW_ID_ON_REREGISTER: non-zero: registering a registered base
  // makes another MR (new id and rkey) and keeps the earlier one until its
  // id is destroyed, as ibv_reg_mr does. Default 0: the base's MR is
  // resized, same id.
  FLAGCX_SW_KNOB_NEW_ID_ON_REREGISTER = 8,
  FLAGCX_SW_KNOB_COUNT = 9,
};

// Returns 0, or -1 for an unknown knob. Setting FAIL_OP or HANG_OP counts N
// from the next transfer on.
int flagcxSwSetKnob(int knob, uint64_t value);
uint64_t flagcxSwGetKnob(int knob);

// Transfers accepted so far (WriteVector/ReadVector/WriteVectorSync calls that
// returned 0), process-wide.
uint64_t flagcxSwTransfersIssued(void);
// Transfers whose id has been handed out and not yet reported finished.
uint64_t flagcxSwTransfersOutstanding(void);

#ifdef __cplusplus
}
#endif

#endif // FLAGCX_SW_H_
