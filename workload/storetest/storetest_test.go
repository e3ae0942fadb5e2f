package storetest_test

import (
	"testing"

	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/storetest"
)

func TestMemoryStore(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		Open: func(*testing.T) workload.Store { return workload.NewMemoryStore() },
	})
}
