//go:build !cgo

package nvml

import (
	"context"
	"fmt"

	"github.com/gpufarm/gpufarm/gpu"
)

// libConfig is empty without cgo: go-nvml cannot be compiled.
type libConfig struct{}

func (libConfig) set() bool { return false }

// errNoCgo is what every call returns in a build without cgo.
var errNoCgo = fmt.Errorf("nvml: built without cgo: rebuild with CGO_ENABLED=1 to use NVML: %w", gpu.ErrUnavailable)

// Backend is the NVML backend. This build has no cgo, so it cannot load
// NVML and New always fails; the type exists so that programs choosing a
// backend at run time compile either way.
type Backend struct{}

var (
	_ gpu.Backend       = (*Backend)(nil)
	_ gpu.PowerLimiter  = (*Backend)(nil)
	_ gpu.ClockLocker   = (*Backend)(nil)
	_ gpu.ProcessLister = (*Backend)(nil)
	_ gpu.MIGController = (*Backend)(nil)
	_ gpu.EventSource   = (*Backend)(nil)
)

// New fails wrapping gpu.ErrUnavailable: NVML needs cgo. Bad options are
// still reported.
func New(ctx context.Context, opts ...Option) (*Backend, error) {
	if _, err := newConfig(opts); err != nil {
		return nil, err
	}
	return nil, errNoCgo
}

func (*Backend) Devices(context.Context) ([]gpu.Device, error) { return nil, errNoCgo }
func (*Backend) Sample(context.Context, []gpu.Sample) error    { return errNoCgo }
func (*Backend) Close() error                                  { return nil }
func (*Backend) PowerLimits(context.Context, int) (gpu.PowerLimits, error) {
	return gpu.PowerLimits{}, errNoCgo
}
func (*Backend) SetPowerLimit(context.Context, int, float64) error     { return errNoCgo }
func (*Backend) LockClocks(context.Context, int, int, int) error       { return errNoCgo }
func (*Backend) ResetClocks(context.Context, int) error                { return errNoCgo }
func (*Backend) Processes(context.Context, int) ([]gpu.Process, error) { return nil, errNoCgo }
func (*Backend) SetMIG(context.Context, int, bool) error               { return errNoCgo }
func (*Backend) WatchEvents(context.Context, chan<- gpu.Event) error   { return errNoCgo }
func (*Backend) DriverVersion() string                                 { return "" }
