package api_test

import (
	"encoding/json"
	"fmt"

	"github.com/gpufarm/gpufarm/agent/api"
)

// A spec as it goes over the wire: snake_case keys, seconds for
// durations, signals by name, unset fields left out.
func ExampleSpec() {
	s := api.Spec{ID: "finetune", Kind: "training", Tenant: "acme", Priority: 2,
		GPUs: api.GPUs{Count: 4, MinMemoryBytes: 20 << 30}, Image: "registry.example/acme/llama-lora:3",
		Command: []string{"torchrun", "--nproc-per-node=4", "train.py"}, Preemptible: true,
		StopSignal: "SIGUSR1", StopGraceSeconds: 120, PricePerGPUHour: 1.1}
	b, _ := json.MarshalIndent(s, "", "  ")
	fmt.Println(string(b))
	// Output:
	// {
	//   "id": "finetune",
	//   "kind": "training",
	//   "tenant": "acme",
	//   "priority": 2,
	//   "gpus": {
	//     "count": 4,
	//     "min_memory_bytes": 21474836480
	//   },
	//   "image": "registry.example/acme/llama-lora:3",
	//   "command": [
	//     "torchrun",
	//     "--nproc-per-node=4",
	//     "train.py"
	//   ],
	//   "preemptible": true,
	//   "stop_signal": "SIGUSR1",
	//   "stop_grace_seconds": 120,
	//   "price_per_gpu_hour": 1.1
	// }
}
