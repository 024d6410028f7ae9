// Minimal stand-in for Mooncake's include/error.h: the integer error codes
// that Mooncake's int-returning transport methods use (0 = success).
// Same names and values as Mooncake's; only what the adapter and its tests
// need is declared here.
#ifndef ERROR_H
#define ERROR_H

#define ERR_INVALID_ARGUMENT (-1)
#define ERR_TOO_MANY_REQUESTS (-2)
#define ERR_ADDRESS_NOT_REGISTERED (-3)
#define ERR_BATCH_BUSY (-4)
#define ERR_DEVICE_NOT_FOUND (-6)
#define ERR_ADDRESS_OVERLAPPED (-7)

#define ERR_METADATA (-200)
#define ERR_ENDPOINT (-201)
#define ERR_CONTEXT (-202)

#define ERR_MEMORY (-302)
#define ERR_NOT_IMPLEMENTED (-303)

#endif  // ERROR_H
