package wire

// Code is one of the closed set of error codes in docs/protocol.md.
type Code string

const (
	CodeBadRequest     Code = "bad_request"
	CodeUnauthorized   Code = "unauthorized"
	CodeForbidden      Code = "forbidden"
	CodeStaleNonce     Code = "stale_nonce"
	CodeSessionBusy    Code = "session_busy"
	CodeSessionExpired Code = "session_expired"
	CodeUnknownMethod  Code = "unknown_method"
	CodeQueueFull      Code = "queue_full"
	CodeTooLarge       Code = "too_large"
	CodeInternal       Code = "internal"
)

// Known reports whether c is one of the closed set.
func (c Code) Known() bool {
	switch c {
	case CodeBadRequest, CodeUnauthorized, CodeForbidden, CodeStaleNonce, CodeSessionBusy,
		CodeSessionExpired, CodeUnknownMethod, CodeQueueFull, CodeTooLarge, CodeInternal:
		return true
	}
	return false
}

// Error is the error member of a reply.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }
