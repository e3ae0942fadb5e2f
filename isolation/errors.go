package isolation

import (
	"fmt"

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
	// ErrDenied: the tenant's policy (TenantPolicy) forbids what the spec
	// asks; the message names each field and rule.
	ErrDenied = fmt.Errorf("isolation: denied by the tenant policy: %w", gpu.ErrPermission)
	// ErrUnsupported: this runtime lacks the feature.
	ErrUnsupported = fmt.Errorf("isolation: not supported by this runtime: %w", gpu.ErrUnsupported)
)
