package training

// ServerKind names an inference server.
type ServerKind string

const (
	VLLM ServerKind = "vllm" // vLLM's OpenAI-compatible server
	TGI  ServerKind = "tgi"  // Hugging Face Text Generation Inference
)
