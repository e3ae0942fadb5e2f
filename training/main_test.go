package training_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/gpufarm/gpufarm/internal/ociimage"
)

// bins are the fake trainer and fake inference server built for the host,
// which the process runtime runs directly.
var bins struct{ trainer, server, dir string }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "training-bins")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins.dir = dir
	bins.trainer, bins.server = filepath.Join(dir, "faketrainer"), filepath.Join(dir, "fakeserver")
	for pkg, out := range map[string]string{"faketrainer": bins.trainer, "fakeserver": bins.server} {
		if err := ociimage.BuildBinary(context.Background(), "github.com/gpufarm/gpufarm/internal/"+pkg, out); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
