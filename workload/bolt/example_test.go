package bolt_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/bolt"
)

func Example() {
	dir, err := os.MkdirTemp("", "gpufarm-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	s, err := bolt.Open(filepath.Join(dir, "workloads.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	w := workload.Workload{
		Spec: workload.Spec{
			ID: "train-1", Kind: workload.KindTraining, Tenant: "acme",
			GPUs: workload.GPURequest{Count: 2}, Image: "registry.example/acme/train:1.2",
		},
		State: workload.StateQueued,
	}
	if err := s.Put(ctx, w); err != nil { // on disk when Put returns
		fmt.Println(err)
		return
	}
	s.Close()

	// A restarted manager finds its queue again.
	s, err = bolt.Open(filepath.Join(dir, "workloads.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	recs, err := s.List(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range recs {
		fmt.Println(r.Spec.ID, r.State, r.Spec.GPUs.Count, "GPUs")
	}
	// Output: train-1 queued 2 GPUs
}
