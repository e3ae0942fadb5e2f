package bolt_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/workload/accounting"
	"github.com/gpufarm/gpufarm/workload/accounting/bolt"
	"github.com/gpufarm/gpufarm/workload/accounting/ledgertest"
)

func TestConformance(t *testing.T) {
	for _, gc := range []bool{true, false} {
		name := map[bool]string{true: "GroupCommit", false: "TransactionPerAppend"}[gc]
		t.Run(name, func(t *testing.T) {
			ledgertest.Test(t, func(t *testing.T) accounting.Ledger {
				l, err := bolt.Open(filepath.Join(t.TempDir(), "ledger.db"), bolt.WithGroupCommit(gc))
				require.NoError(t, err)
				return l
			})
		})
	}
}
