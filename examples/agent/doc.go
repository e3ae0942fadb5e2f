// Command agent runs one GPU node behind the agent's HTTP API (package
// agent), for a control plane to drive:
//
//	go run ./examples/agent -listen 127.0.0.1:9400
//
// By default it serves a simulated rig of 8 A40s (-preset, -gpus), runs
// workloads in containerd when its socket answers and otherwise as host
// processes (-runtime; the process runtime isolates nothing and needs
// -unsafe-root to run as root), keeps its workload records, event log,
// cordons and power budget in a bbolt store and every joule in a bbolt
// ledger under -state, and meters the GPUs every second. -backend nvml
// serves this host's GPUs through NVML and the CDI specs nvidia-ctk wrote.
//
// On loopback it needs no credentials. Anywhere else it refuses to start
// without -tls-cert and -tls-key and either -tokens (a file of "SECRET" or
// "SECRET TENANT" lines; a tenant's token acts for that tenant only) or
// -client-ca (client certificates; one named "tenant:NAME" acts for NAME).
//
// SIGTERM or ^C stop it cleanly: the API shuts down, the workloads keep
// running, and the next start with the same -state finds them, with the
// event stream resumable from the sequence number a client saw last. Try
// it:
//
//	curl -s 127.0.0.1:9400/v1/gpus
//	curl -s -X POST 127.0.0.1:9400/v1/workloads -d '{"id": "job", "kind": "training",
//	  "tenant": "acme", "gpus": {"count": 2}, "image": "sleep", "command": ["sleep", "600"]}'
//	curl -sN 127.0.0.1:9400/v1/events
//
// (the process runtime runs the command on the host, so "sleep" works
// without an image; with containerd, import the tenant's image first:
// POST /v1/tenants/acme/images with the tar as the body).
package main
