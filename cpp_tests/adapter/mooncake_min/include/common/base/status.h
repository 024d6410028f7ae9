// Minimal stand-in for Mooncake's include/common/base/status.h: the Status
// value that Transport methods return. Same class name, codes and factory
// signatures as Mooncake's; only the members the adapter and its tests use.
#ifndef STATUS_H
#define STATUS_H

#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>

namespace mooncake {

class Status final {
   public:
    enum class Code : uint16_t {
        kOk = 0,
        kInvalidArgument = 1,
        kTooManyRequests = 2,
        kAddressNotRegistered = 3,
        kBatchBusy = 4,
        kDeviceNotFound = 6,
        kAddressOverlapped = 7,
        kNotSupportedTransport = 8,
        kMetadata = 200,
        kEndpoint = 201,
        kContext = 202,
        kMemory = 302,
        kNotImplemented = 999,
        kMaxCode
    };

    Status() = default;
    // An OK code ignores the message.
    Status(Code code, std::string_view message);
    ~Status() { delete[] message_; }

    Status(const Status &other);
    Status &operator=(const Status &other);
    Status(Status &&other);
    Status &operator=(Status &&other);

    Code code() const { return code_; }
    std::string_view message() const {
        return message_ ? std::string_view(message_) : std::string_view();
    }
    [[nodiscard]] bool ok() const { return code_ == Code::kOk; }
    [[nodiscard]] bool IsInvalidArgument() const {
        return code_ == Code::kInvalidArgument;
    }
    [[nodiscard]] bool IsTooManyRequests() const {
        return code_ == Code::kTooManyRequests;
    }
    [[nodiscard]] bool IsNotImplemented() const {
        return code_ == Code::kNotImplemented;
    }

    // "<code name>: <message>".
    std::string ToString() const;

    bool operator==(const Status &other) const;
    bool operator!=(const Status &other) const { return !(*this == other); }

    static Status OK() { return Status(); }
    static Status InvalidArgument(std::string_view msg) {
        return Status(Code::kInvalidArgument, msg);
    }
    static Status TooManyRequests(std::string_view msg) {
        return Status(Code::kTooManyRequests, msg);
    }
    static Status AddressNotRegistered(std::string_view msg) {
        return Status(Code::kAddressNotRegistered, msg);
    }
    static Status BatchBusy(std::string_view msg) {
        return Status(Code::kBatchBusy, msg);
    }
    static Status Metadata(std::string_view msg) {
        return Status(Code::kMetadata, msg);
    }
    static Status Context(std::string_view msg) {
        return Status(Code::kContext, msg);
    }
    static Status NotImplemented(std::string_view msg) {
        return Status(Code::kNotImplemented, msg);
    }

    static std::string_view CodeToString(Code code);

   private:
    static const char *CopyMessage(const char *msg);

    Code code_ = Code::kOk;
    const char *message_ = nullptr;  // owned, NUL-terminated; null when OK
};

std::ostream &operator<<(std::ostream &os, Status::Code code);
std::ostream &operator<<(std::ostream &os, const Status &s);

}  // namespace mooncake

#endif  // STATUS_H
