package process_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/process"
)

// Bad options are errors, all reported at once, never silently replaced.
func TestOptionsReportEveryProblem(t *testing.T) {
	newProcess := func(opts ...process.Option) error {
		rt, err := process.New(append([]process.Option{process.WithUnsafeRoot()}, opts...)...)
		if err == nil {
			_ = rt.Close()
		}
		return err
	}
	cases := []struct {
		name string
		opts []process.Option
		says []string // one problem per entry
	}{
		{"without a log dir", nil, []string{"needs WithLogDir"}},
		{"with bad values", []process.Option{process.WithLogDir("logs"), process.WithLogCapBytes(-1)},
			[]string{`WithLogDir("logs"): give an absolute directory`, "WithLogCapBytes(-1)"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := newProcess(tc.opts...)
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
		dir := t.TempDir()
		require.NoError(t, newProcess(process.WithLogDir(filepath.Join(dir, "logs")), process.WithLogCapBytes(2)))
		assert.DirExists(t, filepath.Join(dir, "logs"))
	})
}
