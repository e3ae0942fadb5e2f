package accounting_test

import (
	"testing"

	"github.com/gpufarm/gpufarm/workload/accounting"
	"github.com/gpufarm/gpufarm/workload/accounting/ledgertest"
)

func TestMemoryLedgerConformance(t *testing.T) {
	ledgertest.Test(t, func(*testing.T) accounting.Ledger { return accounting.NewMemoryLedger() })
}
