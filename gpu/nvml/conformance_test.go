//go:build cgo

package nvml

import (
	"testing"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/gputest"
)

func TestConformance(t *testing.T) {
	t.Run("dgxa100", func(t *testing.T) {
		gputest.Run(t, gputest.Harness{New: func(t *testing.T) gpu.Backend {
			return newTestBackend(t, newDGX())
		}})
	})
	t.Run("mixed-rig", func(t *testing.T) {
		gputest.Run(t, gputest.Harness{New: func(t *testing.T) gpu.Backend {
			return newTestBackend(t, mixedRig())
		}})
	})
}
