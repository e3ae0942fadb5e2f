package bolt_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gpufarm/gpufarm/workload/accounting"
	"github.com/gpufarm/gpufarm/workload/accounting/bolt"
	"github.com/gpufarm/gpufarm/workload/accounting/ledgertest"
)

// A node's ledger: records appended, delivered again after a crash (and
// skipped), queried by tenant, and drained through the outbox.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "ledger-example-")
	defer os.RemoveAll(dir)
	l, err := bolt.Open(filepath.Join(dir, "ledger.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()

	recs := ledgertest.Stream("GPU-0", 0, 6) // training, mining and idle minutes
	_ = l.Append(ctx, recs[:4])
	_ = l.Append(ctx, recs) // the first four again, as a writer does after a crash
	acme, _ := accounting.Collect(l.Query(ctx, accounting.Query{Tenant: "acme"}))
	fmt.Println("records of acme:", len(acme))

	page, _ := l.Pending(ctx, 100)
	fmt.Println("to deliver:", len(page))
	// ... the control plane stores page, keyed by Seq, then:
	_ = l.Ack(ctx, page[len(page)-1].Seq)
	page, _ = l.Pending(ctx, 100)
	fmt.Println("left:", len(page))
	// Output:
	// records of acme: 2
	// to deliver: 6
	// left: 0
}
