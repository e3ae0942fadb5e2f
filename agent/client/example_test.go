package client_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"

	"github.com/gpufarm/gpufarm/agent"
	"github.com/gpufarm/gpufarm/agent/api"
	"github.com/gpufarm/gpufarm/agent/client"
	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/isolation/process"
	"github.com/gpufarm/gpufarm/workload"
)

// A Go control plane submits a job with a tenant's token and follows its
// events to the end; Watch would reconnect and resume by itself if the
// agent restarted meanwhile.
func ExampleClient_Watch() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, _ := sim.PresetByName(sim.PresetA40)
	rig, _ := sim.New(p)
	gpus, _ := gpu.New(ctx, rig)
	defer gpus.Close()
	logs, _ := os.MkdirTemp("", "client-example")
	defer os.RemoveAll(logs)
	rt, _ := process.New(process.WithUnsafeRoot(), process.WithLogDir(logs))
	defer rt.Close()
	m, _ := workload.New(gpus, rt, workload.WithLoad(rig.SetGPULoad))
	ran := make(chan error, 1)
	go func() { ran <- m.Run(ctx) }()
	defer func() { cancel(); <-ran; m.Close() }()
	s, _ := agent.New(m, agent.WithTokens(agent.Token{Secret: "acme-0123456789abcdef", Tenant: "acme"}))
	srv := httptest.NewServer(s)
	defer srv.Close()
	defer s.Close() // first: its event streams end, so srv.Close need not wait for them

	c, _ := client.New(srv.URL, client.WithToken("acme-0123456789abcdef"))
	events, _ := c.Watch(ctx, 0)
	w, err := c.Submit(ctx, api.Spec{ID: "eval", Kind: "batch", GPUs: api.GPUs{Count: 2}, Image: "eval",
		Command: []string{"sleep", "0.2"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("submitted for tenant", w.Spec.Tenant)
	for ev := range events {
		fmt.Println(ev.ID, ev.Type)
		if ev.Type == "exited" {
			break
		}
	}
	_, err = c.Submit(ctx, api.Spec{ID: "sneaky", Kind: "batch", Tenant: "globex", GPUs: api.GPUs{Count: 1}, Image: "x"})
	fmt.Println(err)
	// Output:
	// submitted for tenant acme
	// eval queued
	// eval scheduled
	// eval started
	// eval exited
	// agent: 403 denied: tenant "globex": this token acts for tenant "acme" only
}
