package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/gpufarm/gpufarm/agent"
	"github.com/gpufarm/gpufarm/agent/api"
	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/isolation/process"
	"github.com/gpufarm/gpufarm/workload"
)

// A control plane's view of a simulated node: it reads the GPUs, submits
// a job pinned to the GPUs it chose, and reads the job back, over plain
// HTTP and JSON. The process runtime runs "sleep" for the job here.
func ExampleServer() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, _ := sim.PresetByName(sim.PresetRTX3080Riser)
	rig, _ := sim.New(p)
	gpus, _ := gpu.New(ctx, rig)
	defer gpus.Close()
	logs, _ := os.MkdirTemp("", "agent-example")
	defer os.RemoveAll(logs)
	rt, _ := process.New(process.WithUnsafeRoot(), process.WithLogDir(logs))
	defer rt.Close()
	m, _ := workload.New(gpus, rt, workload.WithLoad(rig.SetGPULoad))
	ran := make(chan error, 1)
	go func() { ran <- m.Run(ctx) }()
	defer func() { cancel(); <-ran; m.Close() }()
	s, _ := agent.New(m, agent.WithGPUs(gpus))
	srv := httptest.NewServer(s) // on loopback: no credentials needed
	defer srv.Close()

	var node []api.GPU
	resp, _ := http.Get(srv.URL + "/v1/gpus")
	_ = json.NewDecoder(resp.Body).Decode(&node)
	resp.Body.Close()
	fmt.Printf("%d x %s, link gen%d x%d: good for %s\n", len(node), node[0].Name, node[0].LinkGen, node[0].LinkWidth, node[0].Use)

	body := `{"id": "chat", "kind": "inference", "tenant": "acme", "image": "vllm",
	          "gpus": {"uuids": ["` + node[0].UUID + `"]}, "command": ["sleep", "600"]}`
	resp, _ = http.Post(srv.URL+"/v1/workloads", "application/json", strings.NewReader(body))
	resp.Body.Close()
	fmt.Println("submit:", resp.Status)
	var w api.Workload
	for w.State != "running" {
		time.Sleep(10 * time.Millisecond)
		resp, _ = http.Get(srv.URL + "/v1/workloads/chat")
		_ = json.NewDecoder(resp.Body).Decode(&w)
		resp.Body.Close()
	}
	fmt.Println("chat", w.State, "on the GPU asked for:", w.GPUs[0] == node[0].UUID)

	resp, _ = http.Post(srv.URL+"/v1/workloads", "application/json", strings.NewReader(`{"id": "chat", "gpus": 2}`))
	var e api.Error
	_ = json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, e.Code+":", e.Message)
	// Output:
	// 8 x NVIDIA GeForce RTX 3080, link gen1 x1: good for inference
	// submit: 201 Created
	// chat running on the GPU asked for: true
	// 400 invalid: field "gpus": a JSON number cannot be api.GPUs
}
