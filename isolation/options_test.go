package isolation_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
)

// Bad options are errors, all reported at once, never silently replaced.
func TestOptionsReportEveryProblem(t *testing.T) {
	dir := t.TempDir()
	newContainerd := func(opts ...isolation.Option) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rt, err := isolation.NewContainerd(ctx, opts...)
		if err == nil {
			_ = rt.Close()
		}
		return err
	}
	newProcess := func(opts ...isolation.Option) error {
		rt, err := isolation.NewProcess(opts...)
		if err == nil {
			_ = rt.Close()
		}
		return err
	}
	cases := []struct {
		name string
		make func(...isolation.Option) error
		opts []isolation.Option
		says []string // one problem per entry
	}{
		{"process without a log dir", newProcess, nil, []string{"needs WithLogDir"}},
		{"process with bad values", newProcess, []isolation.Option{
			isolation.WithLogDir("logs"), isolation.WithLogCapBytes(-1), isolation.WithLogCheckInterval(0),
		}, []string{`WithLogDir("logs"): give an absolute directory`, "WithLogCapBytes(-1)", "WithLogCheckInterval(0s)"}},
		{"containerd with bad values", newContainerd, []isolation.Option{
			isolation.WithLogDir(""), isolation.WithLogCapBytes(1), isolation.WithLogCheckInterval(-time.Second),
			isolation.WithAddress(""), isolation.WithSnapshotter(""), isolation.WithRuntimeName(""),
		}, []string{`WithLogDir("")`, "WithLogCapBytes(1)", "WithLogCheckInterval(-1s)", `WithAddress("")`, `WithSnapshotter("")`, `WithRuntimeName("")`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.make(tc.opts...)
			require.Error(t, err)
			t.Logf("error: %v", err)
			assert.ErrorIs(t, err, isolation.ErrInvalid)
			assert.ErrorIs(t, err, gpu.ErrInvalid)
			var joined interface{ Unwrap() []error }
			require.True(t, errors.As(err, &joined))
			assert.Len(t, joined.Unwrap(), len(tc.says), "one error per problem")
			for _, want := range tc.says {
				assert.Contains(t, err.Error(), want)
			}
		})
	}

	t.Run("good values are kept", func(t *testing.T) {
		require.NoError(t, newProcess(isolation.WithLogDir(filepath.Join(dir, "logs")), isolation.WithLogCapBytes(2)))
		assert.DirExists(t, filepath.Join(dir, "logs"))
	})
}
