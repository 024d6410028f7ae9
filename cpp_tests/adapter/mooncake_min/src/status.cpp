// Status for the minimal Mooncake declarations (see include/common/base/status.h).
#include "common/base/status.h"

#include <cstring>
#include <utility>

namespace mooncake {

Status::Status(Code code, std::string_view message) : code_(code) {
    if (code_ == Code::kOk) return;
    char *copy = new char[message.size() + 1];
    std::memcpy(copy, message.data(), message.size());
    copy[message.size()] = '\0';
    message_ = copy;
}

Status::Status(const Status &other)
    : code_(other.code_), message_(CopyMessage(other.message_)) {}

Status &Status::operator=(const Status &other) {
    if (this != &other) {
        const char *copy = CopyMessage(other.message_);
        delete[] message_;
        message_ = copy;
        code_ = other.code_;
    }
    return *this;
}

Status::Status(Status &&other)
    : code_(std::exchange(other.code_, Code::kOk)),
      message_(std::exchange(other.message_, nullptr)) {}

Status &Status::operator=(Status &&other) {
    if (this != &other) {
        delete[] message_;
        code_ = std::exchange(other.code_, Code::kOk);
        message_ = std::exchange(other.message_, nullptr);
    }
    return *this;
}

const char *Status::CopyMessage(const char *msg) {
    if (msg == nullptr) return nullptr;
    const size_t len = std::strlen(msg);
    char *copy = new char[len + 1];
    std::memcpy(copy, msg, len + 1);
    return copy;
}

std::string Status::ToString() const {
    std::string out(CodeToString(code_));
    if (message_) {
        out += ": ";
        out += message_;
    }
    return out;
}

bool Status::operator==(const Status &other) const {
    return code_ == other.code_ && message() == other.message();
}

std::string_view Status::CodeToString(Code code) {
    switch (code) {
        case Code::kOk: return "OK";
        case Code::kInvalidArgument: return "InvalidArgument";
        case Code::kTooManyRequests: return "TooManyRequests";
        case Code::kAddressNotRegistered: return "AddressNotRegistered";
        case Code::kBatchBusy: return "BatchBusy";
        case Code::kDeviceNotFound: return "DeviceNotFound";
        case Code::kAddressOverlapped: return "AddressOverlapped";
        case Code::kNotSupportedTransport: return "NotSupportedTransport";
        case Code::kMetadata: return "Metadata";
        case Code::kEndpoint: return "Endpoint";
        case Code::kContext: return "Context";
        case Code::kMemory: return "Memory";
        case Code::kNotImplemented: return "NotImplemented";
        case Code::kMaxCode: break;
    }
    return "Unknown";
}

std::ostream &operator<<(std::ostream &os, Status::Code code) {
    return os << Status::CodeToString(code);
}

std::ostream &operator<<(std::ostream &os, const Status &s) {
    return os << s.ToString();
}

}  // namespace mooncake
