//go:build cgo

package nvml

import (
	"testing"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/gputest"
)

// TestConformance runs the backend conformance suite over go-nvml's dgxa100
// mock and over the hand-built ex-mining node, with the mocks' faults for
// the hung-device and Xid checks.
func TestConformance(t *testing.T) {
	tests := []struct {
		name string
		lib  func() gonvml.Interface
	}{
		{"dgxa100", func() gonvml.Interface { return newDGX() }},
		{"mixed-rig", func() gonvml.Interface { return mixedRig() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gputest.Run(t, gputest.Harness{
				New: func(t *testing.T) gpu.Backend { return newTestBackend(t, tt.lib()) },
				// The mock's power reading blocks as a wedged driver does.
				// NVML calls cannot be interrupted, so the hang is released
				// in a cleanup that runs before the suite's Close, which
				// would otherwise wait for the stranded call.
				Hang: func(t *testing.T, b gpu.Backend, index int) {
					gpus, _ := mocksOf(t, b)
					t.Cleanup(gpus[index].state.stick())
				},
				// The Xid goes through the mock's event set, as the driver
				// delivers it to nvmlEventSetWait.
				InjectXID: func(t *testing.T, b gpu.Backend, index, xid int) {
					gpus, events := mocksOf(t, b)
					events <- xidEvent(gpus[index], uint64(xid))
				},
			})
		})
	}
}

// mocksOf returns the mock GPUs and the event queue behind a backend built
// by newTestBackend.
func mocksOf(t *testing.T, b gpu.Backend) ([]*gpuMock, chan gonvml.EventData) {
	t.Helper()
	nb, ok := b.(*Backend)
	require.True(t, ok, "backend %T is not the NVML backend", b)
	switch lib := nb.lib.(type) {
	case *rig:
		return lib.gpus, lib.events
	case *dgx:
		return lib.gpus, lib.events
	}
	t.Fatalf("NVML backend over %T, not over this package's mocks", nb.lib)
	return nil, nil
}
