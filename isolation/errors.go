package isolation

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/gpufarm/gpufarm/gpu"
)

// Error categories, matched with errors.Is. Each wraps the gpu category of
// the same meaning, so errors.Is(err, gpu.ErrInvalid) holds too. containerd's
// own error stays in the chain (errors.As, errdefs.IsNotFound ...).
var (
	// ErrInvalid: the Spec or an argument is malformed. Nothing was created.
	ErrInvalid = fmt.Errorf("isolation: invalid argument: %w", gpu.ErrInvalid)
	// ErrNotFound: no such container, image or CDI device.
	ErrNotFound = fmt.Errorf("isolation: not found: %w", gpu.ErrNotFound)
	// ErrExists: a container with this ID already exists in the tenant.
	ErrExists = fmt.Errorf("isolation: already exists: %w", gpu.ErrBusy)
	// ErrState: the container is not in a state that allows the call
	// (start a running one, delete a running one, wait on one never started).
	ErrState = fmt.Errorf("isolation: wrong container state: %w", gpu.ErrBusy)
	// ErrUnavailable: the runtime cannot be reached (containerd down, runtime closed).
	ErrUnavailable = fmt.Errorf("isolation: runtime unavailable: %w", gpu.ErrUnavailable)
	// ErrPermission: a registry refused the credentials, or the process
	// lacks a privilege (mknod needs root).
	ErrPermission = fmt.Errorf("isolation: permission denied: %w", gpu.ErrPermission)
	// ErrUnsupported: this runtime lacks the feature.
	ErrUnsupported = fmt.Errorf("isolation: not supported by this runtime: %w", gpu.ErrUnsupported)
)

// mapErr gives a containerd error its category, keeping it in the chain.
func mapErr(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf(format, args...)
	switch {
	case errdefs.IsNotFound(err):
		return fmt.Errorf("%w: %s: %w", ErrNotFound, msg, err)
	case errdefs.IsAlreadyExists(err):
		return fmt.Errorf("%w: %s: %w", ErrExists, msg, err)
	case errdefs.IsFailedPrecondition(err), errdefs.IsConflict(err):
		return fmt.Errorf("%w: %s: %w", ErrState, msg, err)
	case errdefs.IsInvalidArgument(err):
		return fmt.Errorf("%w: %s: %w", ErrInvalid, msg, err)
	case errdefs.IsUnavailable(err):
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, msg, err)
	case errdefs.IsUnauthorized(err), errdefs.IsPermissionDenied(err):
		return fmt.Errorf("%w: %s: %w", ErrPermission, msg, err)
	case errdefs.IsNotImplemented(err):
		return fmt.Errorf("%w: %s: %w", ErrUnsupported, msg, err)
	case errdefs.IsCanceled(err), errdefs.IsDeadlineExceeded(err), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", msg, err)
	}
	return fmt.Errorf("isolation: %s: %w", msg, err)
}
