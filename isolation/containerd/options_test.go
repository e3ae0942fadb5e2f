package containerd_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/containerd"
)

// Bad options are errors, all reported at once, never silently replaced,
// and found before any connection is tried.
func TestOptionsReportEveryProblem(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rt, err := containerd.New(ctx,
		containerd.WithLogDir(""), containerd.WithLogCapBytes(1), containerd.WithLogCheckInterval(-time.Second),
		containerd.WithAddress(""), containerd.WithSnapshotter(""), containerd.WithRuntimeName(""),
		containerd.WithNetwork(containerd.NetworkConfig{Subnet: netip.MustParsePrefix("10.0.0.0/28"), BridgePrefix: "Bad-Prefix", StateDir: "run"}))
	if err == nil {
		_ = rt.Close()
	}
	require.Error(t, err)
	t.Logf("error: %v", err)
	assert.ErrorIs(t, err, isolation.ErrInvalid)
	assert.ErrorIs(t, err, gpu.ErrInvalid)
	says := []string{`WithLogDir("")`, "WithLogCapBytes(1)", "WithLogCheckInterval(-1s)", `WithAddress("")`, `WithSnapshotter("")`, `WithRuntimeName("")`,
		"WithNetwork: Subnet 10.0.0.0/28", `WithNetwork: BridgePrefix "Bad-Prefix"`, "WithNetwork: PluginDirs", `WithNetwork: StateDir "run"`}
	var joined interface{ Unwrap() []error }
	require.True(t, errors.As(err, &joined))
	assert.Len(t, joined.Unwrap(), len(says), "one error per problem")
	for _, want := range says {
		assert.Contains(t, err.Error(), want)
	}
}
