package isolation

import (
	"github.com/gpufarm/gpufarm/gpu"
)

// Error categories, matched with errors.Is. Each also matches the gpu
// category of the same meaning, so errors.Is(err, gpu.ErrInvalid) holds
// too, without that category's words in the message. containerd's own
// error stays in the chain (errors.As, errdefs.IsNotFound ...).
var (
	// ErrInvalid: the Spec or an argument is malformed. Nothing was created.
	ErrInvalid error = &category{"isolation: invalid argument", gpu.ErrInvalid}
	// ErrNotFound: no such container, image or CDI device.
	ErrNotFound error = &category{"isolation: not found", gpu.ErrNotFound}
	// ErrExists: a container with this ID already exists in the tenant.
	ErrExists error = &category{"isolation: already exists", gpu.ErrBusy}
	// ErrState: the container is not in a state that allows the call
	// (start a running one, delete a running one, wait on one never started).
	ErrState error = &category{"isolation: wrong container state", gpu.ErrBusy}
	// ErrUnavailable: the runtime cannot be reached (containerd down, runtime closed).
	ErrUnavailable error = &category{"isolation: runtime unavailable", gpu.ErrUnavailable}
	// ErrPermission: a registry refused the credentials, or the process
	// lacks a privilege (mknod needs root).
	ErrPermission error = &category{"isolation: permission denied", gpu.ErrPermission}
	// ErrDenied: the tenant's policy (TenantPolicy) forbids what the spec
	// asks; the message names each field and rule.
	ErrDenied error = &category{"isolation: denied by the tenant policy", gpu.ErrPermission}
	// ErrUnsupported: this runtime lacks the feature.
	ErrUnsupported error = &category{"isolation: not supported by this runtime", gpu.ErrUnsupported}
)

// category is an error category that also matches a gpu category.
type category struct {
	msg string
	gpu error
}

func (c *category) Error() string        { return c.msg }
func (c *category) Is(target error) bool { return target == c.gpu }
