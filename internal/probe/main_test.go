package main

import (
	"fmt"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestErrName(t *testing.T) {
	cases := map[error]string{
		nil: "ok", syscall.ENXIO: "ENXIO", syscall.EPERM: "EPERM", syscall.ENOENT: "ENOENT",
		syscall.EROFS: "EROFS", fmt.Errorf("open x: %w", syscall.EACCES): "EACCES",
	}
	for err, want := range cases {
		assert.Equal(t, want, errName(err))
	}
}

// The probe reports errors by errno name, as the isolation tests compare them.
func Example_errName() {
	fmt.Println(errName(nil), errName(syscall.ENXIO), errName(syscall.EPERM))
	// Output: ok ENXIO EPERM
}
