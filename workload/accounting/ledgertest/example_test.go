package ledgertest_test

import (
	"fmt"

	"github.com/gpufarm/gpufarm/workload/accounting/ledgertest"
)

// Stream makes a GPU's records for a test: a minute each, in turn a
// training job, a miner and idle.
func ExampleStream() {
	for _, r := range ledgertest.Stream("GPU-0", 0, 3) {
		fmt.Println(r.Start.Format("15:04"), r.End.Format("15:04"), r.Kind, r.Workload, r.EnergyMJ)
	}
	// Output:
	// 00:00 00:01 training train 1000
	// 00:01 00:02 mining mine-GPU-0 1001
	// 00:02 00:03 idle  1002
}
