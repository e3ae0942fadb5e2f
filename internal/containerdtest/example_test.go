package containerdtest_test

import (
	"errors"
	"fmt"

	"github.com/gpufarm/gpufarm/internal/containerdtest"
)

// Available says why a daemon cannot run here, always as ErrUnavailable.
func ExampleAvailable() {
	err := containerdtest.Available()
	fmt.Println(err == nil || errors.Is(err, containerdtest.ErrUnavailable))
	// Output: true
}
