// Command fakeserver is a fake inference server for tests of the serving
// launchers and readiness probe: it takes vLLM's or Text Generation
// Inference's arguments, loads nothing, and answers their health
// endpoints, without a GPU.
//
// It is vLLM when its first argument is the model (vllm serve MODEL
// --host --port --tensor-parallel-size --max-model-len
// --gpu-memory-utilization ...), TGI when it gets --model-id (with
// --hostname --port --num-shard --max-total-tokens --max-input-tokens
// --cuda-memory-fraction ...). Other flags of either server are accepted
// and ignored; --fake-load-delay=D (its own) is how long "loading the
// model" takes.
//
// Behaviour:
//
//   - It checks what the real servers check first: a tensor parallel size
//     (or shard count) of at least 1 and no more than the GPU device nodes
//     (/dev/nvidiaN) it sees, when it sees any; TGI's max input below its
//     max total tokens. A failed check exits 1 with the reason.
//   - It listens at once and prints "listening on HOST:PORT"; GET /health
//     answers 503 while loading and 200 after the load delay, when it
//     prints "model loaded: MODEL". vLLM's GET /v1/models and TGI's GET
//     /info describe the model, the parallel size and the context length.
//   - On SIGTERM or SIGINT it prints "shutting down" and exits 0.
//
// Exit codes: 0 after a signal, 1 on a failed check or a port it cannot
// take, 2 on bad arguments. It reads its arguments only.
package main
