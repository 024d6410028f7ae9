// Minimal stand-in for Mooncake's include/common.h: the local segment id and
// the clock that stamps slices. Mooncake's header holds much more (NUMA,
// sockets, spin locks); the adapter needs only these.
#ifndef COMMON_H
#define COMMON_H

#include <time.h>

#include <cstdint>

#include "error.h"

namespace mooncake {

// The id under which a transfer engine keeps its own segment.
const static int LOCAL_SEGMENT_ID = 0;

// Wall-clock time in nanoseconds (CLOCK_REALTIME, as Mooncake stamps
// Slice::ts); a negative error code if the clock cannot be read.
static inline int64_t getCurrentTimeInNano() {
    struct timespec now;
    if (clock_gettime(CLOCK_REALTIME, &now) != 0) return -301;  // ERR_CLOCK
    return int64_t{now.tv_sec} * 1000000000 + int64_t{now.tv_nsec};
}

}  // namespace mooncake

#endif  // COMMON_H
