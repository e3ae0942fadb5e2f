package storetest_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/storetest"
)

// A Harness for the memory store, which is not durable, so Reopen stays
// nil. A test passes it to storetest.Run(t, h); here it is used by hand,
// with storetest.Workload's fully populated records.
func Example() {
	h := storetest.Harness{
		Open: func(*testing.T) workload.Store { return workload.NewMemoryStore() },
	}
	ctx := context.Background()
	s := h.Open(nil) // this Open does not use its *testing.T
	defer s.Close()
	for _, id := range []string{"train-1", "mine-0", "train-1"} { // the second train-1 replaces the first
		if err := s.Put(ctx, storetest.Workload(id)); err != nil {
			fmt.Println(err)
			return
		}
	}
	recs, err := s.List(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(recs), "records")
	// Output: 2 records
}
