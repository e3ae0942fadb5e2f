package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/gpufarm/gpufarm/agent/api"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

// httpError is an error with the status and code it is answered with.
type httpError struct {
	status int
	code   string
	err    error
}

func (e *httpError) Error() string { return e.err.Error() }
func (e *httpError) Unwrap() error { return e.err }

// fail makes an error answered with status and code.
func fail(status int, code, format string, args ...any) error {
	return &httpError{status: status, code: code, err: fmt.Errorf(format, args...)}
}

// classify finds the status and code of an error from the SDK.
func classify(err error) (int, string) {
	var he *httpError
	var mb *http.MaxBytesError
	switch {
	case errors.As(err, &he):
		return he.status, he.code
	case errors.As(err, &mb):
		return http.StatusRequestEntityTooLarge, api.CodeTooLarge
	case errors.Is(err, isolation.ErrDenied), errors.Is(err, isolation.ErrPermission):
		return http.StatusForbidden, api.CodeDenied
	case errors.Is(err, workload.ErrNotFound), errors.Is(err, isolation.ErrNotFound):
		return http.StatusNotFound, api.CodeNotFound
	case errors.Is(err, workload.ErrExists), errors.Is(err, isolation.ErrExists):
		return http.StatusConflict, api.CodeExists
	case errors.Is(err, workload.ErrUnplaceable):
		return http.StatusUnprocessableEntity, api.CodeUnplaceable
	case errors.Is(err, workload.ErrInvalid), errors.Is(err, isolation.ErrInvalid), errors.Is(err, accounting.ErrInvalid):
		return http.StatusBadRequest, api.CodeInvalid
	case errors.Is(err, workload.ErrStore), errors.Is(err, workload.ErrClosed), errors.Is(err, isolation.ErrUnavailable):
		return http.StatusServiceUnavailable, api.CodeUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, api.CodeTimeout
	}
	return http.StatusInternalServerError, api.CodeInternal
}

// writeError answers with the JSON error body.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="gpufarm"`)
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(api.Error{Code: code, Message: msg})
}

// writeJSON answers with v.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
